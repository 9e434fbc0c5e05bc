import type { RiskModel } from '../../common/resources/types.gen.js';
import type { Applier } from '../runtime/types.js';
import { type TrainingSettings, trainingChildren, trainingName } from './desired.js';

/**
 * A RiskModel's training objects made to match its spec (trainingChildren): applied while it
 * declares `training`; deleted when a new generation of its spec no longer does (a RiskModel
 * deleted takes them along by garbage collection). The model ConfigMap is never deleted: it
 * holds the model in force.
 */
export async function reconcileTraining(
  rm: RiskModel,
  applier: Applier,
  settings: TrainingSettings,
  specChanged: boolean,
): Promise<void> {
  const desired = trainingChildren(rm, settings);
  if (desired) {
    // The ConfigMap first (the Role names it), the CronJob last (its pods need the rest).
    await applier.apply(desired.configMap);
    await applier.apply(desired.serviceAccount);
    await applier.apply(desired.role);
    await applier.apply(desired.roleBinding);
    await applier.apply(desired.cronJob);
    return;
  }
  if (!specChanged) return;
  const key = { namespace: rm.metadata.namespace ?? 'default', name: trainingName(rm.metadata.name) };
  await applier.delete('batch/v1', 'CronJob', key);
  await applier.delete('rbac.authorization.k8s.io/v1', 'RoleBinding', key);
  await applier.delete('rbac.authorization.k8s.io/v1', 'Role', key);
  await applier.delete('v1', 'ServiceAccount', key);
}
