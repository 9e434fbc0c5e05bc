import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { kinds } from '../../common/resources/kinds/index.js';
import { kubeRequest } from './kubeHttp.js';
import { waitUntil } from './process.js';
import { repoRoot } from './tools.js';

/** Creates every CRD in crds/ and waits until each is Established and discoverable. */
export async function installCrds(kc: KubeConfig): Promise<void> {
  for (const file of readdirSync(join(repoRoot, 'crds')).filter((f) => f.endsWith('.yaml'))) {
    const crd = parse(readFileSync(join(repoRoot, 'crds', file), 'utf8')) as Record<string, unknown>;
    const res = await kubeRequest(kc, 'POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', {
      body: JSON.stringify(crd),
    });
    if (res.status !== 201 && res.status !== 409)
      throw new Error(`${file}: ${res.status} ${JSON.stringify(res.body)}`);
  }
  for (const def of kinds) {
    await waitUntil(
      `${def.plural} established`,
      async () => {
        const r = await kubeRequest(
          kc,
          'GET',
          `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${def.plural}.nox.dev`,
        );
        const conds =
          (r.body as { status?: { conditions?: { type: string; status: string }[] } }).status?.conditions ??
          [];
        return conds.some((c) => c.type === 'Established' && c.status === 'True');
      },
      20_000,
    );
  }
  await waitUntil(
    'nox.dev discovery',
    async () => (await kubeRequest(kc, 'GET', '/apis/nox.dev/v1alpha1')).status === 200,
    10_000,
  );
}

export async function createNamespace(kc: KubeConfig, name: string): Promise<void> {
  const res = await kubeRequest(kc, 'POST', '/api/v1/namespaces', {
    body: JSON.stringify({ metadata: { name } }),
  });
  if (res.status !== 201 && res.status !== 409) throw new Error(`namespace ${name}: ${res.status}`);
}
