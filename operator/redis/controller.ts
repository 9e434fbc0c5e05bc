import type { Logger } from '../../common/logger.js';
import { type ClusterControllerOptions, clusterController } from '../clusterController.js';
import type { Controller } from '../runtime/controller.js';
import type { Manager } from '../runtime/manager.js';
import { clusterOfPod } from './desired.js';
import { RedisClusterReconciler } from './reconciler.js';

export interface RedisClusterControllerOptions extends ClusterControllerOptions {
  log: Logger;
}

/** RedisClusters; a pod turning ready or not wakes its cluster's topology reconcile. */
export function redisClusterController(manager: Manager, opts: RedisClusterControllerOptions): Controller {
  const reconciler = new RedisClusterReconciler({
    client: manager.client,
    applier: manager.applier,
    log: opts.log.child({ controller: 'RedisCluster' }),
  });
  return clusterController(manager, 'RedisCluster', reconciler, clusterOfPod, opts);
}
