import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readExamples } from '../../common/resources/examples.js';
import { kinds } from '../../common/resources/kinds/index.js';
import { validateResource } from '../../common/resources/validate.js';
import { createNamespace, installCrds } from '../harness/crds.js';
import { type Kube, startKube } from '../harness/kube.js';
import { kubectlGet, kubeRequest, serverSideApply } from '../harness/kubeHttp.js';
import { repoRoot } from '../harness/tools.js';

const ns = 'examples';
const plural = (kind: string) => kinds.find((k) => k.kind === kind)!.plural;
const path = (kind: string) =>
  kind === 'Secret'
    ? `/api/v1/namespaces/${ns}/secrets`
    : `/apis/nox.dev/v1alpha1/namespaces/${ns}/${plural(kind)}`;

// The CRDs in crds/ on a real API server: every example is accepted as written, every bad
// example is refused with the field and the rule, and `kubectl get` shows useful columns.
describe('nox.dev CRDs on a real kube-apiserver', () => {
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

  it('accepts every example as written (server-side apply, strict field validation)', async () => {
    const examples = [
      ...readExamples(join(repoRoot, 'examples')),
      ...readExamples(join(repoRoot, 'examples', 'demo')),
    ];
    expect(examples.length).toBeGreaterThan(6);
    for (const e of examples) {
      const res = await serverSideApply(kc, path(e.object.kind as string), e.object);
      expect([200, 201], `${e.file}: ${JSON.stringify(res.body)}`).toContain(res.status);
    }
    const q = await kubeRequest(kc, 'GET', `${path('QuotaPolicy')}/api-quotas`);
    expect((q.body as { spec: Record<string, unknown> }).spec).toMatchObject({
      mode: 'Enforce',
      defaultTier: 'free',
    });
  });

  it('applies schema defaults on the server exactly as validate.ts does for files', async () => {
    const minimal = {
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'QuotaPolicy',
      metadata: { name: 'minimal', namespace: ns },
      spec: {},
    };
    const res = await serverSideApply(kc, path('QuotaPolicy'), minimal);
    expect(res.status).toBe(201);
    const local = validateResource(minimal);
    expect(local.ok).toBe(true);
    if (local.ok)
      expect((res.body as { spec: unknown }).spec).toEqual((local.object as { spec: unknown }).spec);
  });

  const bad = readExamples(join(repoRoot, 'examples', 'bad'));
  it.each(bad.map((e) => [e.file.split('/').at(-1)!, e]))(
    'refuses %s with the field and the rule',
    async (_n, e) => {
      const res = await serverSideApply(kc, path(e.object.kind as string), e.object);
      // Schema and CEL violations are 422 Invalid; list-map duplicates and unknown fields are
      // caught earlier, while server-side apply builds its typed patch, and come back as 500.
      expect([422, 500], JSON.stringify(res.body)).toContain(res.status);
      const message = (res.body as { message: string }).message;
      const name = (e.object.metadata as { name: string }).name;
      expect((await kubeRequest(kc, 'GET', `${path(e.object.kind as string)}/${name}`)).status).toBe(404);
      expect(message).toContain(e.expect!.field);
      expect(message).toContain(e.expect!.message);
      // The sidecar's file validation names the same field for the same input.
      const local = validateResource(e.object);
      expect(local.ok).toBe(false);
      if (!local.ok) expect(local.errors.map((x) => x.field)).toContain(e.expect!.field);
    },
  );

  it('shows the printer columns in `kubectl get`', async () => {
    const qp = await kubectlGet(kc, path('QuotaPolicy'));
    expect(qp.columns).toEqual(['Name', 'Mode', 'Failure', 'Default-Tier', 'Ready', 'Age']);
    const row = qp.rows.find((r) => r[0] === 'api-quotas')!;
    expect(row.slice(0, 4)).toEqual(['api-quotas', 'Enforce', 'Closed', 'free']);
    expect((await kubectlGet(kc, path('QuotaPolicy'), true)).columns).toContain('Reason');

    const pg = await kubectlGet(kc, path('PostgresCluster'));
    expect(pg.columns).toEqual(['Name', 'Instances', 'Primary', 'Ready', 'Age']);
    expect(pg.rows[0]!.slice(0, 2)).toEqual(['nox-db', 3]);

    const rc = await kubectlGet(kc, path('RedisCluster'));
    expect(rc.columns).toEqual(['Name', 'Masters', 'Replicas', 'Nodes-Ready', 'Slots', 'Ready', 'Age']);
    expect(rc.rows[0]!.slice(0, 3)).toEqual(['nox-redis', 3, 1]);

    const oap = await kubectlGet(kc, path('OAuth2Provider'));
    expect(oap.columns).toEqual(['Name', 'Type', 'Login', 'Ready', 'Age']);
    expect(oap.rows.map((r) => [r[0], r[1]])).toEqual(
      expect.arrayContaining([
        ['google', 'google'],
        ['entra', 'microsoft'],
        ['corporate-sso', 'oidc'],
      ]),
    );

    const ap = await kubectlGet(kc, path('AccessPolicy'));
    expect(ap.columns).toEqual(['Name', 'Mode', 'Default', 'Ready', 'Age']);
    const rm = await kubectlGet(kc, path('RiskModel'));
    expect(rm.columns).toEqual(['Name', 'Mode', 'Deny-At', 'Block-At', 'Ready', 'Age']);
    expect(rm.rows[0]!.slice(0, 4)).toEqual(['login-risk', 'DryRun', 0.9, 0.97]);
  });

  it('puts every kind in the "nox" category with short names, so `kubectl get nox` lists them all', async () => {
    const res = await kubeRequest(kc, 'GET', '/apis/nox.dev/v1alpha1');
    const resources = (
      res.body as {
        resources: { name: string; kind: string; categories?: string[]; shortNames?: string[] }[];
      }
    ).resources.filter((r) => !r.name.includes('/'));
    expect(resources.map((r) => r.kind).sort()).toEqual(kinds.map((k) => k.kind).sort());
    for (const r of resources) {
      expect(r.categories, r.kind).toEqual(['nox']);
      expect(r.shortNames?.length, r.kind).toBeGreaterThan(0);
    }
  });

  it('has a status subresource: status is written separately from spec', async () => {
    const p = `${path('QuotaPolicy')}/api-quotas/status`;
    const status = {
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'QuotaPolicy',
      metadata: { name: 'api-quotas' },
      status: {
        observedGeneration: 1,
        conditions: [
          {
            type: 'Ready',
            status: 'True',
            reason: 'Loaded',
            message: 'in force',
            lastTransitionTime: new Date().toISOString(),
          },
        ],
      },
    };
    const res = await kubeRequest(kc, 'PATCH', `${p}?fieldManager=nox-operator&force=true`, {
      body: JSON.stringify(status),
      contentType: 'application/apply-patch+yaml',
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const qp = await kubectlGet(kc, path('QuotaPolicy'));
    expect(qp.rows.find((r) => r[0] === 'api-quotas')![4]).toBe('True');
  });
});
