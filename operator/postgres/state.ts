import { isConflict, type KubeClient, type KubeObject, objectPath } from '../../common/kube/client.js';
import { noxTypes, pods as podType } from '../../common/kube/resources.js';
import type { Logger } from '../../common/logger.js';
import type { PostgresCluster, PostgresClusterStatus } from '../../common/resources/types.gen.js';
import type { Problem } from '../reasons.js';
import type { InstanceAccess } from './instances.js';
import { type InstanceView, podPatches } from './roles.js';

/**
 * What one PostgresCluster reconcile knows and has decided so far. The reconciler observes the
 * instances once; then each aspect (bootstrap.ts, failover.ts, switchover.ts, rejoin.ts,
 * slots.ts, restarts.ts) reads this state, acts, and records what it changed here for the
 * aspects after it and for the status.
 */
export interface ClusterState {
  /** The cluster's latest metadata (after each compare-and-swap), with the spec this reconcile acts on. */
  cluster: Cluster;
  /** The instances as observed (pods and what each says over SQL), by ordinal. */
  readonly views: readonly InstanceView[];
  /** The instance recorded as primary (annotation nox.dev/primary). */
  designated: string | undefined;
  /** The instances recorded as fenced (annotation nox.dev/fenced-instances). */
  readonly fenced: Set<string>;
  /** The primary last observed healthy (status.currentPrimary). */
  currentPrimary: string | undefined;
  lastFailover: FailoverRecord | undefined;
  /** Why a failover or switchover is not done yet (the first reason found). */
  problem: Problem | undefined;
}

export type Cluster = PostgresCluster & KubeObject;
export type FailoverRecord = NonNullable<PostgresClusterStatus['lastFailover']>;

/** What the aspects act with. */
export interface AspectContext {
  readonly client: KubeClient;
  /** The superuser's access to each instance over SQL. */
  readonly access: InstanceAccess;
  readonly log: Logger;
  readonly now: () => Date;
  /** Counts a primary change in the metrics. */
  readonly countPrimaryChange: (kind: 'failover' | 'switchover') => void;
}

export const primaryView = (state: ClusterState): InstanceView | undefined =>
  state.views.find((v) => v.pod === state.designated);

const clusterType = noxTypes.PostgresCluster!;

/**
 * Merge patch of the cluster's annotations with its resourceVersion as precondition (409 when
 * it moved), so two decisions about roles can never both succeed.
 */
export async function recordAnnotations(
  client: KubeClient,
  cluster: Cluster,
  annotations: Record<string, string | null>,
): Promise<Cluster> {
  try {
    const updated = await client.request<Cluster>(
      'PATCH',
      objectPath(clusterType, { namespace: cluster.metadata.namespace!, name: cluster.metadata.name }),
      {
        body: { metadata: { resourceVersion: cluster.metadata.resourceVersion, annotations } },
        contentType: 'application/merge-patch+json',
      },
    );
    // The new metadata; the spec this reconcile acts on (it may hold a scale-down back).
    return { ...updated, spec: cluster.spec };
  } catch (e) {
    if (isConflict(e))
      throw new Error('the PostgresCluster changed while deciding roles; retrying from a fresh read');
    throw e;
  }
}

/** A merge patch of one pod's metadata; a pod that is gone is skipped. */
export async function patchPod(
  client: KubeClient,
  namespace: string,
  pod: string,
  patch: object,
): Promise<void> {
  await client
    .request('PATCH', objectPath(podType, { namespace, name: pod }), {
      body: patch,
      contentType: 'application/merge-patch+json',
    })
    .catch((e: unknown) => {
      if ((e as { code?: number }).code !== 404) throw e;
    });
}

/**
 * Brings every pod's role label and fencing annotation to `designated` and `fenced`
 * (roles.ts). `bootstrap`: the pod allowed to initialise an empty database.
 */
export async function labelPods(
  client: KubeClient,
  cluster: Cluster,
  views: readonly InstanceView[],
  designated: string | undefined,
  fenced: ReadonlySet<string>,
  bootstrap?: string,
): Promise<void> {
  for (const { pod, patch } of podPatches(views, designated, fenced, bootstrap))
    await patchPod(client, cluster.metadata.namespace!, pod, patch);
}
