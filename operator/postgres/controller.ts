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
import { PostgresClusterReconciler } from './reconciler.js';

export interface PostgresClusterControllerOptions {
  log: Logger;
  concurrency?: number;
  resyncMs?: number;
  rateLimit?: RateLimiterOptions;
}

const metadataOnly = (obj: KubeObject): KubeObject => ({
  ...(obj.apiVersion ? { apiVersion: obj.apiVersion } : {}),
  ...(obj.kind ? { kind: obj.kind } : {}),
  metadata: obj.metadata,
});

/**
 * The PostgresCluster controller: woken by its children (controller-owned) changing or
 * going away, and by a Pod of the cluster changing (readiness, IP, labels), so that a lost
 * primary is noticed as soon as its pod is not ready.
 */
export function postgresClusterController(
  manager: Manager,
  opts: PostgresClusterControllerOptions,
): Controller {
  const cache = manager.cache;
  const reconciler = new PostgresClusterReconciler({
    client: manager.client,
    applier: manager.applier,
    log: opts.log.child({ controller: 'PostgresCluster' }),
  });
  return new Controller({
    for: noxType('PostgresCluster'),
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
