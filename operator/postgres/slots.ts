import { describeError } from '../../common/kube/client.js';
import { slotName } from './desired.js';
import { dropSlots, ensureSlots } from './instances.js';
import { orphanSlots } from './roles.js';
import { type AspectContext, type ClusterState, primaryView } from './state.js';

/**
 * Replication slots on the healthy primary: one per replica of spec.instances (so the primary
 * keeps the WAL each still needs), and none for instances a scale-down removed (an orphan slot
 * keeps WAL forever and fills the disk). A failure is logged and retried next reconcile.
 */
export async function manageSlots(ctx: AspectContext, state: ClusterState): Promise<void> {
  const primary = primaryView(state)!;
  const { instances } = state.cluster.spec;
  const wanted = state.views
    .filter((v) => v.pod !== state.designated && v.ordinal < instances)
    .map((v) => slotName(v.pod));
  const missing = wanted.filter((s) => !primary.obs?.slots?.includes(s));
  const orphans = orphanSlots(primary.obs?.slots ?? [], state.cluster.metadata.name, instances);
  try {
    if (missing.length) await ensureSlots(primary.ip!, ctx.access, missing);
    if (orphans.length) {
      const dropped = await dropSlots(primary.ip!, ctx.access, orphans);
      if (dropped.length) ctx.log.info({ slots: dropped }, 'dropped the slots of removed instances');
    }
  } catch (e) {
    ctx.log.warn({ err: describeError(e) }, 'managing replication slots failed');
  }
}
