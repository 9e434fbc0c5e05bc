import { failpoint } from '../../common/failpoint.js';
import { isHealthyPrimary, isStreamingReplica, PRIMARY_ANNOTATION } from './roles.js';
import { type AspectContext, type ClusterState, primaryView, recordAnnotations } from './state.js';

/**
 * Switchover on request (spec.switchoverTo): the target is recorded as primary, so the former
 * primary is labelled replica and its instance manager shuts it down cleanly (the target
 * receives every WAL record); the next reconciles promote the target (failover.ts) once the
 * former primary follows it. Waits while the target is not a streaming replica.
 */
export async function switchOver(ctx: AspectContext, state: ClusterState): Promise<void> {
  const to = state.cluster.spec.switchoverTo;
  const from = state.designated;
  if (!to || !from || to === from || !isHealthyPrimary(primaryView(state))) return;
  const target = state.views.find((v) => v.pod === to);
  if (!target || !isStreamingReplica(target) || state.fenced.has(target.pod)) {
    state.problem = {
      reason: 'SwitchoverWaiting',
      message: `switchover to ${to} waits until it is a streaming replica`,
    };
    return;
  }
  state.cluster = await recordAnnotations(ctx.client, state.cluster, { [PRIMARY_ANNOTATION]: target.pod });
  state.designated = target.pod;
  state.lastFailover = {
    time: ctx.now().toISOString(),
    from,
    to: target.pod,
    reason: 'switchover requested (spec.switchoverTo)',
  };
  ctx.log.info({ from, to: target.pod }, 'switchover');
  ctx.countPrimaryChange('switchover');
  failpoint('switchover.designated');
}
