import { failpoint } from '../../common/failpoint.js';
import { describeError } from '../../common/kube/client.js';
import type { Problem } from '../reasons.js';
import { syncNumber } from './desired.js';
import { parseSynchronousNumber } from './failoverRules.js';
import { type DetachResult, detachReplica, promote } from './instances.js';
import {
  type InstanceView,
  otherPrimaries,
  PRIMARY_ANNOTATION,
  type PromotionCandidate,
  planPromotion,
} from './roles.js';
import { type AspectContext, type Cluster, type ClusterState, recordAnnotations } from './state.js';

/**
 * Every promotion goes through here: a failover, the promotion that ends a switchover, and one
 * an operator restart left half done. The replicas are detached from whatever primary they
 * stream from (instances.ts detachReplica: primary_conninfo cleared, WAL receiver confirmed
 * stopped), so the lost primary, even alive behind a partition the operator cannot see
 * through, can no longer gather the synchronous acknowledgements a commit waits for; then
 * planPromotion (roles.ts) picks the replica that holds every acknowledged commit, on the lost
 * primary's timeline. The replicas stay detached (it survives their restarts) until the new
 * primary is healthy and rejoin.ts attaches them to it. Each step is idempotent and its effect
 * durable (the PostgreSQL setting, the cluster's annotation), so an operator restart anywhere
 * in between starts again from the top and reaches the same decision. See ADR 005.
 */

/** Standbys each commit waited for: the lower of the spec's and what the primary last confirmed (status). */
export function effectiveSyncNumber(cluster: Cluster): number {
  const desired = syncNumber(cluster.spec);
  const confirmed = parseSynchronousNumber(cluster.status?.synchronousStandbyNames);
  return confirmed === undefined ? desired : Math.min(desired, confirmed);
}

export interface PromotionRequest {
  /** The primary being replaced (lost, or switched away from). */
  readonly old: string | undefined;
  /** An instance already designated (a switchover's target), kept unless another replica is ahead of it. */
  readonly preferred?: string;
}

/** Promotes the replica the safety check picks; its name, or why not yet. */
export async function promoteSafely(
  ctx: AspectContext,
  state: ClusterState,
  req: PromotionRequest,
): Promise<{ problem: Problem } | { promoted: string; reason: string }> {
  const { views, fenced } = state;
  const old = views.find((v) => v.pod === req.old);
  const replicas = views.filter((v) => v.pod !== req.old && !fenced.has(v.pod) && v.ip);
  const candidates = await Promise.all(replicas.map((v) => candidate(ctx, v)));
  const plan = planPromotion({
    candidates: candidates.filter((c): c is PromotionCandidate => c !== undefined),
    totalReplicas: state.cluster.spec.instances - 1,
    syncNumber: effectiveSyncNumber(state.cluster),
    ...(state.cluster.status?.timeline !== undefined ? { timeline: state.cluster.status.timeline } : {}),
    // Reported by its kubelet; a pod that is gone counts too (a new one would start fenced).
    oldPrimaryDown: req.old !== undefined && !old?.running,
    ...(req.preferred ? { preferred: req.preferred } : {}),
  });
  if (plan.kind === 'wait') return { problem: { reason: plan.reason, message: plan.message } };
  ctx.log.info(
    { detached: candidates.filter((c) => c?.detached).map((c) => c!.pod), target: plan.target },
    'replicas detached; promoting',
  );
  failpoint('promotion.detached');

  if (state.designated !== plan.target) {
    // Compare-and-swap on the cluster: a concurrent decision makes this fail, and the next
    // reconcile starts over.
    state.cluster = await recordAnnotations(ctx.client, state.cluster, { [PRIMARY_ANNOTATION]: plan.target });
    state.designated = plan.target;
    failpoint('promotion.designated');
  }
  const target = views.find((v) => v.pod === plan.target)!;
  // The old primary was checked by the caller (stopped, unreachable, or following as a replica).
  const problem = await finishPromotion(
    ctx,
    target,
    views.filter((v) => v.pod !== req.old),
  );
  if (problem) return { problem };
  failpoint('promotion.promoted');
  return { promoted: plan.target, reason: plan.reason };
}

/**
 * Detaches one replica; what is known of it when that cannot be confirmed; undefined when
 * unreachable. Positions count only as detachReplica read them, with replay settled: what the
 * reconcile observed earlier may predate a replay still running.
 */
async function candidate(ctx: AspectContext, v: InstanceView): Promise<PromotionCandidate | undefined> {
  let result: DetachResult;
  try {
    result = await detachReplica(v.ip!, ctx.access);
  } catch (e) {
    ctx.log.warn({ instance: v.pod, err: describeError(e) }, 'detaching a replica failed');
    return undefined;
  }
  if (!result.detached) {
    if (result.primary) return undefined;
    ctx.log.warn({ instance: v.pod, why: result.why }, 'replica not detached');
  }
  const { receivedLsn, replayedLsn, timeline, settled } = result;
  return {
    pod: v.pod,
    detached: result.detached,
    settled: settled === true,
    ...(receivedLsn ? { receivedLsn } : {}),
    ...(replayedLsn ? { replayedLsn } : {}),
    ...(timeline !== undefined ? { timeline } : {}),
  };
}

/** Promotes `target` once no other instance (of `views`) answers as a primary; the reason when not done. */
async function finishPromotion(
  ctx: AspectContext,
  target: InstanceView,
  views: readonly InstanceView[],
): Promise<Problem | undefined> {
  const others = otherPrimaries(views, target.pod);
  if (others.length)
    return {
      reason: 'WaitingForOldPrimary',
      message: `${others.join(', ')} still answer as primary; ${target.pod} is promoted once they have stopped`,
    };
  try {
    if (!(await promote(target.ip!, ctx.access)))
      return { reason: 'PromotionPending', message: `${target.pod} has not finished promotion yet` };
    ctx.log.info({ instance: target.pod }, 'promoted');
    return undefined;
  } catch (e) {
    return { reason: 'PromotionFailed', message: `promoting ${target.pod}: ${describeError(e)}` };
  }
}
