import type { Problem } from '../reasons.js';
import { slotName } from './desired.js';
import {
  chooseFailoverTarget,
  compareLsn,
  enoughReplicasForSafeFailover,
  FENCING_ANNOTATION,
  fencingAnnotation,
  heldLsn,
  type InstanceRole,
  ordinalOf,
  type PodMetadataPatch,
  primaryLabelPatch,
  ROLE_LABEL,
  replicasNeededForSafeFailover,
} from './failoverRules.js';
import { BOOTSTRAP_ANNOTATION } from './instanceManager.js';
import type { InstanceObservation } from './instances.js';

/**
 * Who should be what, from what the reconciler observed: pure functions, unit-tested.
 * The designated primary is the cluster's annotation nox.dev/primary, changed only by a
 * compare-and-swap on the PostgresCluster (see reconciler.ts); everything else follows it.
 */

/** Cluster annotation: the instance that is (or is becoming) the primary. */
export const PRIMARY_ANNOTATION = 'nox.dev/primary';

export interface InstanceView {
  readonly pod: string;
  readonly ordinal: number;
  readonly ip?: string;
  /** Pod Ready condition (the readiness probe: PostgreSQL accepts connections). */
  readonly ready: boolean;
  /** Its container runs (the instance manager; PostgreSQL itself may be held back, e.g. when fenced). */
  readonly running: boolean;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  readonly obs?: InstanceObservation;
}

export function desiredRole(
  pod: string,
  designated: string | undefined,
  fenced: ReadonlySet<string>,
): InstanceRole {
  if (fenced.has(pod)) return 'fenced';
  return pod === designated ? 'primary' : 'replica';
}

/**
 * Merge patches bringing each pod's role label, fencing annotation and bootstrap permission
 * to the desired state. `bootstrap`: the pod allowed to initialise a new cluster (only the
 * first primary of a cluster that never had one).
 */
export function podPatches(
  views: readonly InstanceView[],
  designated: string | undefined,
  fenced: ReadonlySet<string>,
  bootstrap?: string,
): { pod: string; patch: PodMetadataPatch }[] {
  const out: { pod: string; patch: PodMetadataPatch }[] = [];
  for (const v of views) {
    const role = desiredRole(v.pod, designated, fenced);
    const meta = { metadata: { labels: { ...v.labels }, annotations: { ...v.annotations } } };
    const allowed = v.pod === bootstrap && role === 'primary';
    const bootstrapPatch: PodMetadataPatch | undefined =
      allowed === (v.annotations[BOOTSTRAP_ANNOTATION] === 'allowed')
        ? undefined
        : { metadata: { annotations: { [BOOTSTRAP_ANNOTATION]: allowed ? 'allowed' : null } } };
    const patch = mergePatches(
      role === 'fenced'
        ? fencingAnnotation(meta, true)
        : mergePatches(fencingAnnotation(meta, false), primaryLabelPatch(meta, role)),
      bootstrapPatch,
    );
    if (patch) out.push({ pod: v.pod, patch });
  }
  return out;
}

function mergePatches(
  a: PodMetadataPatch | undefined,
  b: PodMetadataPatch | undefined,
): PodMetadataPatch | undefined {
  if (!a) return b;
  if (!b) return a;
  return {
    metadata: {
      labels: { ...a.metadata.labels, ...b.metadata.labels },
      annotations: { ...a.metadata.annotations, ...b.metadata.annotations },
    },
  };
}

/** The primary is healthy when its pod is ready and it answers as a primary (not in recovery). */
export function isHealthyPrimary(v: InstanceView | undefined): boolean {
  return !!v && v.ready && v.obs?.reachable === true && v.obs.inRecovery === false;
}

/** A replica counts as streaming when its WAL receiver streams from the primary. */
export function isStreamingReplica(v: InstanceView): boolean {
  return (
    v.ready && v.obs?.reachable === true && v.obs.inRecovery === true && v.obs.walReceiver === 'streaming'
  );
}

/** Instances other than `designated` that answer as primaries: must never happen. */
export function otherPrimaries(views: readonly InstanceView[], designated: string | undefined): string[] {
  return views
    .filter((v) => v.pod !== designated && v.obs?.reachable && v.obs.inRecovery === false)
    .map((v) => v.pod);
}

export type FailoverPlan = { kind: 'promote'; target: string; reason: string } | ({ kind: 'wait' } & Problem);

/**
 * The replica to promote once the old primary is fenced and the replicas stopped receiving
 * WAL, or why not yet: with synchronous replication the most advanced of the readable
 * replicas holds every acknowledged commit only if enough replicas could be read.
 */
export function planFailover(
  replicas: readonly InstanceView[],
  totalReplicas: number,
  syncNumber: number,
): FailoverPlan {
  const candidates = replicas.map((v) => ({
    pod: v.pod,
    ready: v.obs?.reachable === true && v.obs.inRecovery === true,
    fenced: v.annotations[FENCING_ANNOTATION] === 'true' || v.labels[ROLE_LABEL] === 'fenced',
    ...(v.obs?.receivedLsn ? { receivedLsn: v.obs.receivedLsn } : {}),
    ...(v.obs?.replayedLsn ? { replayedLsn: v.obs.replayedLsn } : {}),
  }));
  const readable = candidates.filter((c) => c.ready && !c.fenced && c.receivedLsn).length;
  if (!enoughReplicasForSafeFailover(readable, totalReplicas, syncNumber))
    return {
      kind: 'wait',
      reason: 'NotEnoughReplicas',
      message: `${readable} of ${totalReplicas} replicas can be read; with ${syncNumber} synchronous, ${replicasNeededForSafeFailover(totalReplicas, syncNumber)} are needed to be sure no acknowledged commit is lost`,
    };
  const target = chooseFailoverTarget(candidates);
  if (!target)
    return { kind: 'wait', reason: 'NoFailoverCandidate', message: 'no ready, unfenced replica to promote' };
  return {
    kind: 'promote',
    target: target.pod,
    reason: `most advanced replica (received ${target.receivedLsn}, replayed ${target.replayedLsn ?? 'unknown'})`,
  };
}

/**
 * Why a failover cannot go ahead yet, judged from the reconcile's observations before the lost
 * primary is fenced; undefined when it may. planPromotion will need totalReplicas -
 * syncNumber + 1 replicas (one without synchronous replication) reachable and in recovery;
 * while fewer are, nothing can be promoted, and fencing the old primary would only cost it its
 * place: after a total outage it would come back fenced and be rewound although it may be the
 * only instance holding every acknowledged commit. Left unfenced, it resumes as the primary if
 * it returns first (as Patroni's leader does while its key has not been taken).
 */
export function failoverBlocked(
  replicas: readonly InstanceView[],
  totalReplicas: number,
  syncNumber: number,
): Problem | undefined {
  const readable = replicas.filter((v) => v.obs?.reachable && v.obs.inRecovery).map((v) => v.pod);
  const needed = replicasNeededForSafeFailover(totalReplicas, syncNumber);
  if (readable.length >= needed) return undefined;
  return {
    reason: 'NotEnoughReplicas',
    message: `the primary is lost but ${readable.length} of ${totalReplicas} replicas can be read${readable.length ? ` (${readable.join(', ')})` : ''}; a failover needs ${needed}, so the primary is not fenced and resumes its place if it returns first`,
  };
}

/** A replica as the promotion safety check sees it (promotion.ts gathers these). */
export interface PromotionCandidate {
  readonly pod: string;
  /** Its WAL receiver is confirmed stopped and primary_conninfo cleared: it acknowledges nothing more. */
  readonly detached: boolean;
  /**
   * Its replay has stopped: the startup process waits for WAL and the replayed position no
   * longer moves, so every record it holds is replayed and its positions are final. A replica
   * that has just restarted replays the WAL on its disk for a while before it says so.
   */
  readonly settled: boolean;
  /** Last WAL position received and flushed; unknown when it could not be read. */
  readonly receivedLsn?: string;
  readonly replayedLsn?: string;
  /** The timeline of the WAL it holds; unknown when it could not be read. */
  readonly timeline?: number;
}

export interface PromotionInput {
  /** Every replica the operator could reach, other than the lost primary and fenced instances. */
  readonly candidates: readonly PromotionCandidate[];
  /** Replicas the lost primary could have had (spec.instances - 1), reachable or not. */
  readonly totalReplicas: number;
  /** Standbys each commit waited for: the lower of the spec's and the one PostgreSQL last confirmed. */
  readonly syncNumber: number;
  /** The lost primary's timeline as last recorded (status.timeline); else the newest a candidate holds. */
  readonly timeline?: number;
  /**
   * The lost primary's container is reported not running: it acknowledges nothing more, so
   * replicas still attached to it may count (their positions are final).
   */
  readonly oldPrimaryDown: boolean;
  /** The instance already designated (a switchover's target): chosen when no candidate is ahead of it. */
  readonly preferred?: string;
}

/**
 * The one safety check every promotion goes through (failover, a switchover's promotion, and a
 * promotion resumed after an operator restart). A commit the lost primary acknowledged is on
 * at least syncNumber of its replicas; so once totalReplicas - syncNumber + 1 of them are
 * detached (the lost primary can then never gather syncNumber acknowledgements again) and
 * their positions read, the most advanced of those holds every acknowledged commit. Only
 * replicas on the lost primary's timeline count: one stranded on an older timeline neither
 * acknowledged its commits nor can follow it, and is left out of totalReplicas as well. A
 * replica on a newer timeline than the lost primary's means a promotion the operator did not
 * make: nothing is promoted.
 */
export function planPromotion(input: PromotionInput): FailoverPlan {
  const { candidates, syncNumber } = input;
  const known = candidates.filter((c) => c.timeline !== undefined).map((c) => c.timeline!);
  const timeline = input.timeline ?? (known.length ? Math.max(...known) : undefined);
  if (timeline === undefined)
    return { kind: 'wait', reason: 'NotEnoughReplicas', message: 'no replica’s timeline can be read' };
  const ahead = candidates.filter((c) => c.timeline !== undefined && c.timeline > timeline);
  if (ahead.length)
    return {
      kind: 'wait',
      reason: 'TimelineDiverged',
      message: `${ahead.map((c) => `${c.pod} (timeline ${c.timeline})`).join(', ')} hold WAL of a timeline after the primary’s ${timeline}; nothing is promoted until an administrator looks`,
    };
  const stranded = candidates.filter((c) => c.timeline !== undefined && c.timeline < timeline);
  const cutOff = candidates.filter(
    (c) => (c.detached || input.oldPrimaryDown) && c.timeline === timeline && heldLsn(c) !== undefined,
  );
  const counted = cutOff.filter((c) => c.settled);
  const possible = Math.max(input.totalReplicas - stranded.length, 0);
  const needed = replicasNeededForSafeFailover(possible, syncNumber);
  if (counted.length < needed && cutOff.length >= needed) {
    const replaying = cutOff.filter((c) => !c.settled);
    return {
      kind: 'wait',
      reason: 'ReplayInProgress',
      message: `${replaying.map((c) => `${c.pod} (replayed ${c.replayedLsn ?? 'unknown'})`).join(', ')} still replay the WAL they hold; the replica to promote is chosen once every position is final`,
    };
  }
  if (counted.length < needed) {
    const attached = candidates.filter((c) => !c.detached && !input.oldPrimaryDown).map((c) => c.pod);
    const strandedNote = stranded.length
      ? `; ${stranded.map((c) => `${c.pod} is stranded on timeline ${c.timeline}`).join(', ')}`
      : '';
    return attached.length
      ? {
          kind: 'wait',
          reason: 'ReplicasStillAttached',
          message: `${counted.length} of the ${needed} replicas needed are detached from the lost primary; ${attached.join(', ')} still stream from it or could not be confirmed stopped${strandedNote}`,
        }
      : {
          kind: 'wait',
          reason: 'NotEnoughReplicas',
          message: `${counted.length} of ${possible} replicas on timeline ${timeline} can be read; with ${syncNumber} synchronous, ${needed} are needed to be sure no acknowledged commit is lost${strandedNote}`,
        };
  }
  const best = chooseFailoverTarget(counted.map((c) => ({ ...c, ready: true, fenced: false })))!;
  const preferred = counted.find((c) => c.pod === input.preferred);
  const target = preferred && compareLsn(heldLsn(preferred), heldLsn(best)) >= 0 ? preferred : best;
  return {
    kind: 'promote',
    target: target.pod,
    reason: `${target === preferred ? 'designated' : 'most advanced'} replica on timeline ${timeline} (holds WAL to ${heldLsn(target)}: received ${target.receivedLsn ?? 'nothing since its start'}, replayed ${target.replayedLsn ?? 'unknown'}; ${counted.length} of ${possible} replicas detached, replay finished, read)`,
  };
}

/**
 * Slots on the primary the cluster no longer needs: those of instances past spec.instances
 * (scaled down). A slot keeps WAL for its replica forever, so an orphan fills the disk.
 */
export function orphanSlots(slots: readonly string[], clusterName: string, instances: number): string[] {
  const wanted = new Set(Array.from({ length: instances }, (_, i) => slotName(`${clusterName}-${i}`)));
  const ours = new RegExp(`^${slotName(`${clusterName}-`)}\\d+$`);
  return slots.filter((s) => ours.test(s) && !wanted.has(s));
}

/**
 * Why lowering spec.instances must wait, if it must: the StatefulSet removes the highest
 * ordinals, and the primary must not be one of them (switch over first).
 */
export function scaleDownProblem(designated: string | undefined, instances: number): Problem | undefined {
  if (designated === undefined || ordinalOf(designated) < instances) return undefined;
  return {
    reason: 'ScaleDownBlocked',
    message: `the primary ${designated} would be removed by instances=${instances}; switch over to a lower instance first (spec.switchoverTo); the StatefulSet keeps its size until then`,
  };
}
