import { describeError } from '../../common/kube/client.js';
import { fencedInstancesPatch, primaryConninfo } from './desired.js';
import { attachReplica } from './instances.js';
import { type AspectContext, type ClusterState, recordAnnotations } from './state.js';

/**
 * Fenced instances whose pods run again rejoin as replicas (their instance managers rewind or
 * re-clone them) once the primary is healthy: their names leave the cluster's fenced record.
 * Only once the operator sees that the instance does not run PostgreSQL as a primary (the
 * connection refused: the fence reached its instance manager, or it is a replica already): an
 * instance it merely cannot reach may be a primary behind a partition, and unfenced it would
 * be labelled replica and served by -ro.
 */
export async function rejoinFenced(ctx: AspectContext, state: ClusterState): Promise<void> {
  const back = [...state.fenced].filter(
    (p) =>
      p !== state.designated &&
      state.views.some(
        (v) => v.pod === p && v.running && (v.obs?.refused || (v.obs?.reachable && v.obs.inRecovery)),
      ),
  );
  if (!back.length) return;
  for (const p of back) state.fenced.delete(p);
  state.cluster = await recordAnnotations(
    ctx.client,
    state.cluster,
    fencedInstancesPatch([...state.fenced]).metadata.annotations,
  );
  ctx.log.info({ instances: back }, 'fenced instances rejoin as replicas');
}

/**
 * Replicas left detached by a promotion (promotion.ts), or started without a primary to follow,
 * are attached to the healthy primary: primary_conninfo back to the -rw Service, which now
 * routes to it. Only once the primary is healthy, so that no replica streams from (and
 * acknowledges commits for) anything else while a failover is being decided.
 */
export async function attachReplicas(ctx: AspectContext, state: ClusterState): Promise<void> {
  for (const v of state.views) {
    if (v.pod === state.designated || state.fenced.has(v.pod) || !v.ip) continue;
    if (!v.obs?.reachable || !v.obs.inRecovery || v.obs.primaryConninfo !== '') continue;
    try {
      await attachReplica(v.ip, ctx.access, primaryConninfo(state.cluster, v.pod));
      ctx.log.info({ instance: v.pod, primary: state.designated }, 'attached a replica to the primary');
    } catch (e) {
      ctx.log.warn({ instance: v.pod, err: describeError(e) }, 'attaching a replica failed');
    }
  }
}
