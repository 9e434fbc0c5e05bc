import type { KubeConfig } from '@kubernetes/client-node';
import type { PostgresCluster } from '../../common/resources/types.gen.js';
import { getObject, waitForObject } from './kubeHttp.js';
import { createNoxObject, type NodeCluster, startNodeCluster } from './kubelet.js';
import { type KubeProxy, startKubeProxy } from './kubeProxy.js';
import { type RunningOperator, startOperator } from './operator.js';
import type { ConnectTo } from './pgHistory.js';
import type { Service } from './process.js';

/**
 * What the PostgresCluster tests read of one cluster through the API server: its status, the
 * Secrets, Service and pod addresses an application or a test connects with.
 */
export interface PgClusterView {
  readonly path: string;
  get<T>(path: string): Promise<T | undefined>;
  /** Waits for the cluster's status to satisfy `ok` (fails early when `watched` exits). */
  waitStatus(
    what: string,
    ok: (c: PostgresCluster | undefined) => boolean,
    timeoutMs: number,
  ): Promise<PostgresCluster>;
  secret(name: string, key: string): Promise<string>;
  clusterIP(service: string): Promise<string>;
  podIP(pod: string): Promise<string | undefined>;
  /** The application's connection to `cluster` (default: this one): the -rw ClusterIP, the app Secret's user, password and database. */
  appConnection(cluster?: string): Promise<ConnectTo>;
}

/**
 * `watched`: the operator process whose exit ends a wait early (read at each wait: tests restart
 * it); none when the operator runs in a pod.
 */
export function pgClusterView(
  kc: KubeConfig,
  namespace: string,
  name: string,
  watched?: () => Service,
): PgClusterView {
  const path = `/apis/nox.dev/v1alpha1/namespaces/${namespace}/postgresclusters/${name}`;
  const get = <T>(p: string) => getObject<T>(kc, p);
  const secret = async (secretName: string, key: string) => {
    const s = await get<{ data: Record<string, string> }>(
      `/api/v1/namespaces/${namespace}/secrets/${secretName}`,
    );
    return Buffer.from(s!.data[key]!, 'base64').toString('utf8');
  };
  const clusterIP = async (service: string) =>
    (await get<{ spec: { clusterIP: string } }>(`/api/v1/namespaces/${namespace}/services/${service}`))!.spec
      .clusterIP;
  return {
    path,
    get,
    waitStatus: (what, ok, timeoutMs) =>
      waitForObject<PostgresCluster>(kc, path, what, ok, timeoutMs, watched?.()),
    secret,
    clusterIP,
    async appConnection(cluster = name) {
      return {
        host: await clusterIP(`${cluster}-rw`),
        user: await secret(`${cluster}-app`, 'username'),
        password: await secret(`${cluster}-app`, 'password'),
        database: await secret(`${cluster}-app`, 'dbname'),
      };
    },
    async podIP(pod) {
      return (await get<{ status?: { podIP?: string } }>(`/api/v1/namespaces/${namespace}/pods/${pod}`))
        ?.status?.podIP;
    },
  };
}

export const condition = (c: PostgresCluster | undefined, type: string) =>
  c?.status?.conditions?.find((x) => x.type === type);

/** A primary other than `old` is recorded. */
export const newPrimary =
  (old: string) =>
  (c: PostgresCluster | undefined): boolean =>
    !!c?.status?.currentPrimary && c.status.currentPrimary !== old;

/** Ready, the status of the current generation, and `replicas` ready replicas. */
export const healthyWith =
  (replicas: number) =>
  (c: PostgresCluster | undefined): boolean =>
    condition(c, 'Ready')?.status === 'True' &&
    c?.status?.observedGeneration === c?.metadata.generation &&
    (c?.status?.instances ?? []).filter((i) => i.role === 'replica' && i.ready).length === replicas;

export interface PostgresClusterUnderTest extends NodeCluster {
  readonly proxy: KubeProxy;
  readonly op: RunningOperator;
}

/**
 * A real API server and controller-manager, the kubelet and kube-proxy stand-ins, the built
 * operator, and a PostgresCluster `name` of 3 instances (quorum synchronous replication, one
 * standby per commit, 2 s failover delay) being created in `namespace`.
 */
export async function startPostgresClusterUnderTest(
  namespace: string,
  name: string,
  operatorName: string,
): Promise<PostgresClusterUnderTest> {
  const node = await startNodeCluster(namespace);
  const proxy = await startKubeProxy(node.kube);
  const op = await startOperator(node.kube, { name: operatorName });
  await createNoxObject(node.kc, 'postgresclusters', {
    kind: 'PostgresCluster',
    metadata: { name, namespace },
    spec: {
      instances: 3,
      image: 'postgres:15',
      synchronous: { mode: 'Quorum', number: 1 },
      failover: { delay: '2s' },
      storage: { size: '1Gi' },
    },
  });
  return { ...node, proxy, op };
}
