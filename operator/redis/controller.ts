import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../../common/logger.js';
import { Controller, watchOf } from '../runtime/controller.js';
import type { KubeObject } from '../runtime/kubeClient.js';
import type { Manager } from '../runtime/manager.js';
import type { RateLimiterOptions } from '../runtime/queue.js';
import {
  configMaps,
  noxType,
  podDisruptionBudgets,
  pods,
  secrets,
  services,
  statefulSets,
} from '../runtime/resources.js';
import { clusterOfPod } from './desired.js';
import { RedisClusterReconciler } from './reconciler.js';

export interface RedisClusterControllerOptions {
  /** The reconciler reads the RedisCluster, its Secret and Pods with these credentials. */
  kubeConfig: KubeConfig;
  log: Logger;
  concurrency?: number;
  resyncMs?: number;
  rateLimit?: RateLimiterOptions;
}

/** Only what the controller needs of an owned Secret or ConfigMap: its metadata (no values cached). */
const metadataOnly = (obj: KubeObject): KubeObject => ({
  ...(obj.apiVersion ? { apiVersion: obj.apiVersion } : {}),
  ...(obj.kind ? { kind: obj.kind } : {}),
  metadata: obj.metadata,
});

/**
 * The RedisCluster controller: its children (Secret, ConfigMap, Services, StatefulSet,
 * PodDisruptionBudget, controller-owned) wake it when changed or deleted, and so does a Pod
 * of the cluster turning ready or not (Pods are the StatefulSet's, so they are mapped by
 * label with clusterOfPod).
 */
export function redisClusterController(manager: Manager, opts: RedisClusterControllerOptions): Controller {
  const cache = manager.cache;
  const reconciler = new RedisClusterReconciler({
    kubeConfig: opts.kubeConfig,
    applier: manager.applier,
    log: opts.log.child({ controller: 'RedisCluster' }),
  });
  return new Controller({
    for: noxType('RedisCluster'),
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
