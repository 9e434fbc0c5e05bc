import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { operatorRbac } from '../../operator/rbac.js';
import { createNamespace } from './crds.js';
import type { Kube } from './kube.js';
import { kubeRequest } from './kubeHttp.js';
import { freePort } from './ports.js';
import { type Service, start, waitUntil } from './process.js';
import { repoRoot } from './tools.js';

/** The built operator (`node dist/operator/main.js`). */
export const operatorEntry = join(repoRoot, 'dist', 'operator', 'main.js');

/**
 * Grants `user` exactly what operator/rbac.ts declares: a ClusterRole for the namespaced and
 * cluster rules, a Role in the operator's own namespace for its Lease.
 */
export async function grantOperatorRbac(
  kc: KubeConfig,
  user: string,
  systemNamespace: string,
): Promise<void> {
  const post = async (path: string, body: object) => {
    const r = await kubeRequest(kc, 'POST', path, { body: JSON.stringify(body) });
    if (r.status !== 201 && r.status !== 409)
      throw new Error(`${path}: ${r.status} ${JSON.stringify(r.body)}`);
  };
  const rbac = '/apis/rbac.authorization.k8s.io/v1';
  const subjects = [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }];
  await post(`${rbac}/clusterroles`, {
    metadata: { name: user },
    rules: [...operatorRbac.namespaced, ...operatorRbac.cluster],
  });
  await post(`${rbac}/clusterrolebindings`, {
    metadata: { name: user },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: user },
    subjects,
  });
  await post(`${rbac}/namespaces/${systemNamespace}/roles`, {
    metadata: { name: `${user}-leader-election` },
    rules: operatorRbac.ownNamespace,
  });
  await post(`${rbac}/namespaces/${systemNamespace}/rolebindings`, {
    metadata: { name: `${user}-leader-election` },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: `${user}-leader-election` },
    subjects,
  });
}

export interface RunningOperator {
  readonly service: Service;
  readonly httpPort: number;
}

/**
 * Starts the built operator as `user` (a client certificate with exactly the operator's RBAC),
 * with short lease and retry timings, and waits for /readyz.
 */
export async function startOperator(
  kube: Kube,
  opts: { name: string; user?: string; systemNamespace?: string; env?: Record<string, string> },
): Promise<RunningOperator> {
  if (!existsSync(operatorEntry)) throw new Error(`${operatorEntry} is missing; run \`npm run build\``);
  const user = opts.user ?? 'nox-operator';
  const systemNamespace = opts.systemNamespace ?? 'nox-system';
  const kc = kube.kubeConfig();
  await createNamespace(kc, systemNamespace);
  await grantOperatorRbac(kc, user, systemNamespace);
  const kubeconfig = await kube.kubeconfigFor(user);
  const httpPort = await freePort();
  const service = start(opts.name, process.execPath, [operatorEntry], {
    env: {
      ...process.env,
      NOX_KUBECONFIG: kubeconfig,
      NOX_HTTP_PORT: String(httpPort),
      NOX_OPERATOR_NAMESPACE: systemNamespace,
      NOX_OPERATOR_IDENTITY: opts.name,
      NOX_LEASE_DURATION_MS: '3000',
      NOX_LEASE_RENEW_DEADLINE_MS: '2000',
      NOX_LEASE_RETRY_PERIOD_MS: '500',
      NOX_RETRY_BASE_MS: '100',
      NOX_RETRY_MAX_MS: '2000',
      NOX_LOG_LEVEL: 'info',
      ...opts.env,
    },
  });
  await waitUntil(
    'nox-operator /readyz',
    async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined))?.status === 200,
    30_000,
    service,
  );
  return { service, httpPort };
}
