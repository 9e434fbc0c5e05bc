import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { helm } from '../harness/helm.js';
import { type Kube, startKube } from '../harness/kube.js';
import { getObject } from '../harness/kubeHttp.js';
import { tool } from '../harness/tools.js';

/**
 * charts/nox against a real kube-apiserver (no node: nothing runs, but every object the
 * chart renders must be accepted as written, CRD schemas and CEL rules included): install
 * with the RedisCluster and PostgresCluster, upgrade, the documented CRD upgrade step, and
 * uninstall. Pods running from real images is the real-node suite's part.
 */

const NS = 'nox-system';

describe('charts/nox on a real API server', () => {
  let kube: Kube;
  const run = (args: string[]) => helm(args, { kubeconfig: kube.kubeconfigPath, timeoutMs: 120_000 });
  const get = <T>(path: string) => getObject<T>(kube.kubeConfig(), path);

  beforeAll(async () => {
    kube = await startKube();
  }, 180_000);
  afterAll(async () => {
    await kube?.stop();
  });

  it('installs the CRDs and every object, the clusters included', async () => {
    const res = await run([
      'install',
      'demo',
      'charts/nox',
      '--namespace',
      NS,
      '--create-namespace',
      '--set',
      'redisCluster.enabled=true',
      '--set',
      'postgresCluster.enabled=true',
      '--set',
      'authz.autoscaling.enabled=true',
    ]);
    expect(res.code, res.stderr).toBe(0);
    for (const path of [
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/redisclusters.nox.dev',
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/postgresclusters.nox.dev',
      `/apis/apps/v1/namespaces/${NS}/deployments/demo-nox-authz`,
      `/apis/apps/v1/namespaces/${NS}/deployments/demo-nox-operator`,
      `/api/v1/namespaces/${NS}/services/demo-nox-authz`,
      `/apis/policy/v1/namespaces/${NS}/poddisruptionbudgets/demo-nox-authz`,
      `/apis/autoscaling/v2/namespaces/${NS}/horizontalpodautoscalers/demo-nox-authz`,
      `/apis/nox.dev/v1alpha1/namespaces/${NS}/redisclusters/demo-nox-redis`,
      `/apis/nox.dev/v1alpha1/namespaces/${NS}/postgresclusters/demo-nox-postgres`,
    ])
      expect(await get(path), path).toBeDefined();
    // The chart's opt-in to the schema migrations is on the stored PostgresCluster.
    const pg = await get<{ spec: Record<string, unknown> }>(
      `/apis/nox.dev/v1alpha1/namespaces/${NS}/postgresclusters/demo-nox-postgres`,
    );
    expect(pg?.spec).toMatchObject({ instances: 2, migrations: { enabled: true } });
    // The preStop sleep action is accepted as the chart writes it.
    const dep = await get<{
      spec: { template: { spec: { containers: { lifecycle?: unknown }[] } } };
    }>(`/apis/apps/v1/namespaces/${NS}/deployments/demo-nox-authz`);
    expect(dep?.spec.template.spec.containers[0]?.lifecycle).toEqual({ preStop: { sleep: { seconds: 5 } } });
  }, 180_000);

  it('upgrades to changed values, and applies newer CRDs with the documented kubectl step', async () => {
    const res = await run([
      'upgrade',
      'demo',
      'charts/nox',
      '--namespace',
      NS,
      '--reuse-values',
      '--set',
      'sidecar.logLevel=debug',
      '--set',
      'postgresCluster.spec.instances=3',
    ]);
    expect(res.code, res.stderr).toBe(0);
    const cm = await get<{ data: Record<string, string> }>(
      `/api/v1/namespaces/${NS}/configmaps/demo-nox-sidecar`,
    );
    expect(cm?.data.NOX_LOG_LEVEL).toBe('debug');
    const pg = await get<{ spec: { instances: number } }>(
      `/apis/nox.dev/v1alpha1/namespaces/${NS}/postgresclusters/demo-nox-postgres`,
    );
    expect(pg?.spec.instances).toBe(3);

    // Helm never touches crds/ after the first install: the docs say to apply them first.
    const kubectl = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile(
        tool('kubectl'),
        [
          '--kubeconfig',
          kube.kubeconfigPath,
          'apply',
          '--server-side',
          '--force-conflicts',
          '-f',
          'charts/nox/crds/',
        ],
        { timeout: 60_000 },
        (err, stdout, stderr) =>
          resolve({ code: err ? ((err.code as number) ?? 1) : 0, out: `${stdout}${stderr}` }),
      );
    });
    expect(kubectl.code, kubectl.out).toBe(0);
    expect(kubectl.out).toContain('postgresclusters.nox.dev serverside-applied');
  }, 180_000);

  it('uninstalls everything but the CRDs (and with them nobody’s data)', async () => {
    const res = await run(['uninstall', 'demo', '--namespace', NS, '--wait']);
    expect(res.code, res.stderr).toBe(0);
    for (const path of [
      `/apis/apps/v1/namespaces/${NS}/deployments/demo-nox-authz`,
      `/api/v1/namespaces/${NS}/services/demo-nox-authz`,
      `/apis/nox.dev/v1alpha1/namespaces/${NS}/redisclusters/demo-nox-redis`,
      `/apis/nox.dev/v1alpha1/namespaces/${NS}/postgresclusters/demo-nox-postgres`,
    ])
      expect(await get(path), path).toBeUndefined();
    // Helm keeps CRDs it installed from crds/: deleting them would delete every nox.dev resource.
    expect(
      await get('/apis/apiextensions.k8s.io/v1/customresourcedefinitions/postgresclusters.nox.dev'),
    ).toBeDefined();
  }, 180_000);
});
