import { fencedInstancesPatch } from './desired.js';
import { type AspectContext, type ClusterState, recordAnnotations } from './state.js';

/**
 * Fenced instances whose pods run again rejoin as replicas (their instance managers rewind or
 * re-clone them) once the primary is healthy: their names leave the cluster's fenced record.
 */
export async function rejoinFenced(ctx: AspectContext, state: ClusterState): Promise<void> {
  const back = [...state.fenced].filter(
    (p) => p !== state.designated && state.views.some((v) => v.pod === p && v.running),
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
