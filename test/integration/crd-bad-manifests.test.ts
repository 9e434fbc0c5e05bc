import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readExamples } from '../../common/resources/examples.js';
import { kinds } from '../../common/resources/kinds/index.js';
import { validateResource } from '../../common/resources/validate.js';
import { createNamespace, installCrds } from '../harness/crds.js';
import { type Kube, startKube } from '../harness/kube.js';
import { kubeRequest, serverSideApply } from '../harness/kubeHttp.js';
import { repoRoot } from '../harness/tools.js';

const ns = 'bad-manifests';
const dir = join(repoRoot, 'test', 'fixtures', 'bad-manifests');
const path = (kind: string) =>
  `/apis/nox.dev/v1alpha1/namespaces/${ns}/${kinds.find((k) => k.kind === kind)!.plural}`;

// The corpus of bad manifests (test/fixtures/bad-manifests/, one case per file, written apart
// from examples/): values the sidecar or the operator would refuse only at compile or reconcile
// time, or that would be refused by the API server when the operator applies a child object.
// Each must be refused when it is applied, by the real API server with the CRDs of crds/, with
// an error naming the field; the sidecar's file validation (validate.ts) names the same field.
describe('bad manifests are refused when applied, naming the field', () => {
  let kube: Kube;
  let kc: KubeConfig;

  beforeAll(async () => {
    kube = await startKube();
    kc = kube.kubeConfig();
    await installCrds(kc);
    await createNamespace(kc, ns);
  });
  afterAll(async () => {
    await kube?.stop();
  });

  const cases = readExamples(dir);

  it('has one case per file, each naming the field it expects', () => {
    const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
    expect(cases.length).toBe(files.length);
    expect(cases.length).toBeGreaterThanOrEqual(90);
    for (const c of cases) expect(c.expect, c.file).toBeDefined();
    // Every kind that can be written wrongly in a way the programs would find later has cases.
    expect(new Set(cases.map((c) => c.object.kind))).toEqual(
      new Set(['QuotaPolicy', 'AccessPolicy', 'OAuth2Provider', 'RedisCluster', 'PostgresCluster']),
    );
  });

  it.each(cases.map((c) => [c.file.split('/').at(-1)!, c]))('refuses %s', async (_n, c) => {
    const kind = c.object.kind as string;
    const res = await serverSideApply(kc, path(kind), c.object);
    // Schema and CEL violations are 422 Invalid; unknown fields are caught while server-side
    // apply builds its typed patch, and come back as 500.
    expect([422, 500], JSON.stringify(res.body)).toContain(res.status);
    const message = (res.body as { message: string }).message;
    expect(message).toContain(`${c.expect!.field}:`);
    expect(message).toContain(c.expect!.message);
    // The error is about this field, not a rule that could not be evaluated.
    expect(message).not.toMatch(/evaluating rule|no such overload|cost limit|exceeds budget/i);
    const name = (c.object.metadata as { name: string }).name;
    expect((await kubeRequest(kc, 'GET', `${path(kind)}/${name}`)).status).toBe(404);

    const local = validateResource(c.object);
    expect(local.ok).toBe(false);
    if (!local.ok) {
      const hit = local.errors.find(
        (e) => e.field === c.expect!.field && e.message.includes(c.expect!.message),
      );
      expect(hit, JSON.stringify(local.errors)).toBeDefined();
    }
  });
});
