import type { KubeObject } from '../common/kube/client.js';
import {
  configMaps,
  noxType,
  podDisruptionBudgets,
  pods,
  secrets,
  services,
  statefulSets,
} from '../common/kube/resources.js';
import { Controller, watchOf } from './runtime/controller.js';
import type { Manager } from './runtime/manager.js';
import type { RateLimiterOptions } from './runtime/queue.js';
import type { ObjectKey, Reconciler } from './runtime/types.js';

export interface ClusterControllerOptions {
  concurrency?: number;
  resyncMs?: number;
  rateLimit?: RateLimiterOptions;
}

/** Only what a controller needs of an owned Secret or ConfigMap: its metadata (no values cached). */
const metadataOnly = (obj: KubeObject): KubeObject => ({
  ...(obj.apiVersion ? { apiVersion: obj.apiVersion } : {}),
  ...(obj.kind ? { kind: obj.kind } : {}),
  metadata: obj.metadata,
});

/**
 * The controller of a Nox data cluster kind (RedisCluster, PostgresCluster): its children
 * (Secrets, ConfigMap, Services, StatefulSet, PodDisruptionBudget, controller-owned) wake it
 * when changed or deleted, and so does a Pod of the cluster changing (ready or not, IP,
 * labels). Pods belong to the StatefulSet, so they are mapped to their cluster by label.
 */
export function clusterController(
  manager: Manager,
  kind: 'RedisCluster' | 'PostgresCluster',
  reconciler: Reconciler,
  clusterOfPod: (pod: KubeObject) => ObjectKey[],
  opts: ClusterControllerOptions,
): Controller {
  const cache = manager.cache;
  return new Controller({
    for: noxType(kind),
    reconciler,
    owns: [
      cache.informer(secrets, { transform: metadataOnly, variant: 'metadata' }),
      cache.informer(configMaps, { transform: metadataOnly, variant: 'metadata' }),
      services,
      statefulSets,
      podDisruptionBudgets,
    ],
    watches: [
      watchOf(cache.informer(pods, { labelSelector: 'app.kubernetes.io/part-of=nox' }), (pod) =>
        clusterOfPod(pod),
      ),
    ],
    ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    ...(opts.resyncMs !== undefined ? { resyncMs: opts.resyncMs } : {}),
    ...(opts.rateLimit ? { rateLimit: opts.rateLimit } : {}),
  });
}
