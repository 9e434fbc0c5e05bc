import type { Logger } from '../../common/logger.js';
import { type ClusterControllerOptions, clusterController } from '../clusterController.js';
import type { Controller } from '../runtime/controller.js';
import type { Manager } from '../runtime/manager.js';
import { clusterOfPod } from './desired.js';
import { postgresMetrics } from './metrics.js';
import { PostgresClusterReconciler } from './reconciler.js';

/** PostgresClusters; a lost primary is noticed as soon as its pod turns not ready. */
export function postgresClusterController(
  manager: Manager,
  opts: ClusterControllerOptions & { log: Logger },
): Controller {
  const reconciler = new PostgresClusterReconciler({
    client: manager.client,
    applier: manager.applier,
    log: opts.log.child({ controller: 'PostgresCluster' }),
    metrics: postgresMetrics(manager.registry),
  });
  return clusterController(manager, 'PostgresCluster', reconciler, clusterOfPod, opts);
}
