import { failpoint } from '../../common/failpoint.js';
import { describeError } from '../../common/kube/client.js';
import type { Problem } from '../reasons.js';
import { failoverDelayMs, fencedInstancesPatch, slotName } from './desired.js';
import { ensureSlots, observeInstance } from './instances.js';
import { effectiveSyncNumber, promoteSafely } from './promotion.js';
import { failoverBlocked, isHealthyPrimary, otherPrimaries } from './roles.js';
import {
  type AspectContext,
  type ClusterState,
  type FailoverRecord,
  labelPods,
  primaryView,
  recordAnnotations,
} from './state.js';

/**
 * Failover, when the primary has not been healthy for spec.failover.delay: fence it (durably
 * on the cluster, then on its pod, so it never runs as primary again), make sure it does not
 * answer as a primary where the operator can reach it, then promote through the one safety
 * check (promotion.ts: replicas detached, timeline, quorum), repoint the labels and create the
 * replication slots the other replicas stream through. The pure rules are in failoverRules.ts
 * and roles.ts; why detachment and not a lease is ADR 005.
 */

/** Since when each cluster's designated primary is not healthy (in memory: an operator restart only delays a failover). */
export class PrimaryLoss {
  readonly #since = new Map<string, number>();

  /** How long the primary of `cluster` has been lost, its clock starting now if it was not running. */
  lostFor(cluster: string, now: number): number {
    const since = this.#since.get(cluster) ?? now;
    this.#since.set(cluster, since);
    return now - since;
  }

  recovered(cluster: string): void {
    this.#since.delete(cluster);
  }
}

export interface FailoverOptions {
  readonly loss: PrimaryLoss;
  /** The cluster's key in `loss`. */
  readonly id: string;
}

/**
 * What the designated primary's health calls for: healthy, it is the current primary;
 * designated but still a replica, its promotion is finished; lost (with failover enabled), a
 * failover once spec.failover.delay has passed. Returns how long to wait when the delay has
 * not passed yet (state.problem says so).
 */
export async function handlePrimaryHealth(
  ctx: AspectContext,
  state: ClusterState,
  opts: FailoverOptions,
): Promise<{ retryInMs: number } | undefined> {
  const { designated, currentPrimary } = state;
  const primary = primaryView(state);
  if (isHealthyPrimary(primary)) {
    opts.loss.recovered(opts.id);
    state.currentPrimary = designated;
    return undefined;
  }
  if (designated && primary?.obs?.reachable && primary.obs.inRecovery && primary.ready) {
    // Designated but still a replica: a failover or switchover was recorded and the
    // promotion is still to be done (or the operator stopped between the two). After a
    // switchover the former primary must first have finished its clean shutdown (which
    // sends every WAL record to the standbys still streaming from it) and be back as a
    // replica, or be gone: while it is shutting down it refuses connections, which alone
    // proves nothing.
    const previous =
      currentPrimary !== designated ? state.views.find((v) => v.pod === currentPrimary) : undefined;
    if (
      previous &&
      !state.fenced.has(previous.pod) &&
      previous.running &&
      !(previous.obs?.reachable && previous.obs.inRecovery)
    )
      state.problem = {
        reason: 'WaitingForOldPrimary',
        message: `${previous.pod} is shutting down; ${designated} is promoted once it follows as a replica`,
      };
    else {
      const outcome = await promoteSafely(ctx, state, {
        old: currentPrimary !== designated ? currentPrimary : undefined,
        preferred: designated,
      });
      if ('problem' in outcome) state.problem = outcome.problem;
      else if (outcome.promoted !== designated) {
        state.lastFailover = {
          time: ctx.now().toISOString(),
          from: currentPrimary ?? designated,
          to: outcome.promoted,
          reason: `${designated} was designated but ${outcome.promoted} is ahead of it; promoted the ${outcome.reason}`,
        };
        ctx.log.warn(state.lastFailover, 'promoted another replica than the designated one');
      }
    }
    return undefined;
  }
  if (!designated || currentPrimary === undefined || state.cluster.spec.failover?.enabled === false)
    return undefined;

  const waitedMs = opts.loss.lostFor(opts.id, ctx.now().getTime());
  const delay = failoverDelayMs(state.cluster.spec);
  if (waitedMs < delay) {
    state.problem = {
      reason: 'PrimaryUnavailable',
      message: `primary ${designated} is not healthy; failover in ${Math.ceil((delay - waitedMs) / 1000)} s unless it recovers`,
    };
    return { retryInMs: delay - waitedMs + 20 };
  }
  const outcome = await failOver(ctx, state, designated);
  if ('problem' in outcome) state.problem = outcome.problem;
  else {
    state.lastFailover = outcome.record;
    state.designated = outcome.record.to;
    opts.loss.recovered(opts.id);
    ctx.countPrimaryChange('failover');
  }
  return undefined;
}

/**
 * The failover steps, each a precondition of the next; any that does not hold yet returns
 * the reason and the next reconcile tries again from the top.
 */
async function failOver(
  ctx: AspectContext,
  state: ClusterState,
  old: string,
): Promise<{ problem: Problem } | { record: FailoverRecord }> {
  const { views, fenced } = state;
  const { client, access, log } = ctx;
  // 1. Fence the old primary: on the cluster first (it survives the pod), then on the pod. Not
  // while too few replicas are back to promote one (after a total outage, say): the old
  // primary keeps its place if it returns first.
  if (!fenced.has(old)) {
    const blocked = failoverBlocked(
      views.filter((v) => v.pod !== old && !fenced.has(v.pod)),
      state.cluster.spec.instances - 1,
      effectiveSyncNumber(state.cluster),
    );
    if (blocked) return { problem: blocked };
    fenced.add(old);
    state.cluster = await recordAnnotations(
      client,
      state.cluster,
      fencedInstancesPatch([...fenced]).metadata.annotations,
    );
    log.warn({ instance: old }, 'fenced the lost primary');
    failpoint('failover.fenced');
  }
  await labelPods(client, state.cluster, views, old, fenced);

  // 2. If the operator can reach it, it must not be answering as a primary (its instance
  // manager stops it once the fence reaches the pod). Not reaching it proves nothing: the
  // detachment in step 3 is what keeps it from acknowledging commits.
  const oldView = views.find((v) => v.pod === old);
  if (oldView?.ip) {
    const now = await observeInstance(oldView.ip, access);
    if (now.reachable && now.inRecovery === false)
      return {
        problem: {
          reason: 'FencingInProgress',
          message: `waiting for the fenced primary ${old} to stop before promoting a replica`,
        },
      };
  }

  // 3. Detach the replicas, choose and promote (promotion.ts), under compare-and-swap.
  const outcome = await promoteSafely(ctx, state, { old });
  if ('problem' in outcome) return outcome;
  const spec = state.cluster.spec;
  const record = {
    time: ctx.now().toISOString(),
    from: old,
    to: outcome.promoted,
    reason: `primary ${old} lost for ${spec.failover?.delay ?? '5s'}; promoted the ${outcome.reason}`,
  };
  log.warn(record, 'failover');
  await labelPods(client, state.cluster, views, outcome.promoted, fenced);
  // The other replicas stream through slots of their own, which the new primary does not have yet.
  const slots = views
    .filter((v) => v.pod !== outcome.promoted && v.ordinal < spec.instances)
    .map((v) => slotName(v.pod));
  const target = views.find((v) => v.pod === outcome.promoted)!;
  await ensureSlots(target.ip!, access, slots).catch((e: unknown) =>
    log.warn({ err: describeError(e) }, 'creating replication slots failed'),
  );
  return { record };
}

/**
 * Instances other than the designated primary that answer as primaries must never be: they
 * are fenced (their instance managers stop them, and -rw never routes to them) and reported.
 */
export async function fenceOtherPrimaries(ctx: AspectContext, state: ClusterState): Promise<void> {
  const extra = otherPrimaries(state.views, state.designated);
  if (!extra.length) return;
  ctx.log.error(
    { instances: extra, primary: state.designated },
    'instances other than the primary answer as primaries',
  );
  state.problem ??= {
    reason: 'SplitBrainPrevented',
    message: `${extra.join(', ')} answer as primaries; they are fenced from -rw and stopped by their instance managers`,
  };
  for (const p of extra) state.fenced.add(p);
  await labelPods(ctx.client, state.cluster, state.views, state.designated, state.fenced);
}
