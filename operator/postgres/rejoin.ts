import { describeError } from '../../common/kube/client.js';
import { fencedInstancesPatch, primaryConninfo } from './desired.js';
import { compareLsn, heldLsn } from './failoverRules.js';
import { REWIND_ANNOTATION } from './instanceManager.js';
import { attachReplica, type InstanceObservation } from './instances.js';
import { type AspectContext, type ClusterState, patchPod, primaryView, recordAnnotations } from './state.js';

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

/**
 * Why a replica cannot follow the primary, if it cannot: it is on an earlier timeline of the
 * primary's history and holds WAL past the point where that timeline ended (the new one forked
 * before it), or on a timeline not in that history at all. A replica on an earlier timeline
 * but not past its end is only late: its WAL receiver switches timelines by itself.
 */
export function strandedBy(
  replica: InstanceObservation | undefined,
  primary: InstanceObservation,
): string | undefined {
  if (!replica?.reachable || !replica.inRecovery || replica.walReceiver === 'streaming') return undefined;
  if (replica.timeline === undefined || primary.timeline === undefined || !primary.forks) return undefined;
  if (replica.timeline >= primary.timeline) return undefined;
  const fork = primary.forks.find((f) => f.timeline === replica.timeline);
  if (!fork) return `timeline ${replica.timeline} is not in the primary's history`;
  const held = heldLsn(replica);
  if (held && compareLsn(held, fork.endLsn) > 0)
    return `it holds WAL to ${held} of timeline ${replica.timeline}, which ended at ${fork.endLsn}`;
  return undefined;
}

/**
 * Stranded replicas (strandedBy) are asked to rewind onto the healthy primary's timeline: the
 * pod annotation nox.dev/rewind, valued with that timeline, which their instance manager obeys
 * once per value (pg_rewind, or a clone when that fails).
 */
export async function rewindStranded(ctx: AspectContext, state: ClusterState): Promise<void> {
  const primary = primaryView(state)?.obs;
  if (!primary?.timeline) return;
  const token = String(primary.timeline);
  for (const v of state.views) {
    if (v.pod === state.designated || state.fenced.has(v.pod)) continue;
    const why = strandedBy(v.obs, primary);
    if (!why || v.annotations[REWIND_ANNOTATION] === token) continue;
    ctx.log.warn(
      { instance: v.pod, timeline: primary.timeline, why },
      'replica stranded: asking it to rewind',
    );
    try {
      await patchPod(ctx.client, state.cluster.metadata.namespace!, v.pod, {
        metadata: { annotations: { [REWIND_ANNOTATION]: token } },
      });
    } catch (e) {
      ctx.log.warn({ instance: v.pod, err: describeError(e) }, 'asking a stranded replica to rewind failed');
    }
  }
}
