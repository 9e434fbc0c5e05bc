import { configVersion } from './desired.js';
import { RESTART_ANNOTATION } from './instanceManager.js';
import { type InstanceView, isStreamingReplica, PRIMARY_ANNOTATION, planFailover } from './roles.js';
import {
  type AspectContext,
  type ClusterState,
  labelPods,
  patchPod,
  primaryView,
  recordAnnotations,
} from './state.js';

/**
 * Settings that need a restart, rolled out the way that keeps writes going: one replica at a
 * time (only while every other replica streams), through the pod annotation the instance
 * manager obeys, with the cluster's generation as the request; then a switchover to the most
 * advanced replica, which restarts the former primary as it rejoins. A single instance is
 * restarted in place. Runs only with a healthy primary and no failover or switchover going on.
 */
export async function rollRestarts(ctx: AspectContext, state: ClusterState): Promise<void> {
  const { cluster, views, designated, fenced } = state;
  const token = String(cluster.metadata.generation ?? 0);
  const primary = primaryView(state)!;
  const replicas = views.filter(
    (v) => v.pod !== designated && !fenced.has(v.pod) && v.ordinal < cluster.spec.instances,
  );
  if (!replicas.every(isStreamingReplica)) return;
  // Nothing is judged on a file an instance has not read yet: a replica that looks up to date
  // only because the kubelet has not delivered the new postgresql.conf would be promoted, then
  // need a restart as the primary, and the roll-out would switch over a second time.
  const version = configVersion(cluster);
  const behind = [primary, ...replicas].filter((v) => v.obs?.configVersion !== version);
  if (behind.length) {
    ctx.log.debug(
      { instances: behind.map((v) => v.pod), version },
      'waiting for the configuration to reach every instance',
    );
    return;
  }
  const request = async (v: InstanceView) => {
    if (v.annotations[RESTART_ANNOTATION] === token) return; // asked already; it is restarting
    ctx.log.info({ instance: v.pod }, 'restarting to apply settings that need a restart');
    await patchPod(ctx.client, cluster.metadata.namespace!, v.pod, {
      metadata: { annotations: { [RESTART_ANNOTATION]: token } },
    });
  };
  const pending = replicas.filter((v) => v.obs?.pendingRestart);
  if (pending.length) return request(pending[0]!);
  if (!primary.obs?.pendingRestart) return;
  if (replicas.length === 0) return request(primary);

  const plan = planFailover(replicas, replicas.length, 0);
  if (plan.kind !== 'promote') return;
  state.cluster = await recordAnnotations(ctx.client, cluster, { [PRIMARY_ANNOTATION]: plan.target });
  state.lastFailover = {
    time: ctx.now().toISOString(),
    from: designated!,
    to: plan.target,
    reason: 'switchover to apply settings that need a restart (the former primary restarts as it rejoins)',
  };
  state.designated = plan.target;
  ctx.log.info(state.lastFailover, 'switchover');
  ctx.countPrimaryChange('switchover');
  await labelPods(ctx.client, state.cluster, views, state.designated, fenced);
}
