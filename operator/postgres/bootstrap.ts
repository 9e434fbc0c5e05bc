import { PRIMARY_ANNOTATION } from './roles.js';
import { type AspectContext, type ClusterState, recordAnnotations } from './state.js';

/**
 * A new cluster: the first instance is designated primary, and it alone may initialise an
 * empty database (labelPods' bootstrap). An existing primary whose record was lost (the
 * annotation removed by hand) is adopted rather than replaced.
 */
export async function designateFirstPrimary(ctx: AspectContext, state: ClusterState): Promise<void> {
  if (state.designated) return;
  const primaries = state.views.filter((v) => v.obs?.reachable && v.obs.inRecovery === false);
  const pick =
    primaries.length === 1
      ? primaries[0]!.pod
      : primaries.length === 0
        ? `${state.cluster.metadata.name}-0`
        : undefined;
  if (!pick || !state.views.some((v) => v.pod === pick)) return;
  state.cluster = await recordAnnotations(ctx.client, state.cluster, { [PRIMARY_ANNOTATION]: pick });
  state.designated = pick;
  ctx.log.info({ primary: pick }, 'designated the first primary');
}

/** The pod allowed to initialise an empty database: only the first primary of a cluster that never had one. */
export function bootstrapInstance(state: ClusterState): string | undefined {
  return state.currentPrimary === undefined ? state.designated : undefined;
}
