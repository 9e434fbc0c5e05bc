/**
 * Pure pieces of PostgresCluster failover: WAL positions (LSNs), the choice of the replica to
 * promote, and the pod metadata patches that move the role label and fence an instance.
 * No I/O here: the reconciler gathers the facts and applies the patches.
 */

/** The pod label the -rw and -ro Services select on. */
export const ROLE_LABEL = 'nox.dev/role';
export type InstanceRole = 'primary' | 'replica' | 'fenced';

/** Pod annotation: "true" while the instance must not run (or accept writes). */
export const FENCING_ANNOTATION = 'nox.dev/fenced';
/**
 * Cluster annotation: the JSON list of fenced instance names. It is the durable record (a pod
 * annotation is lost when the StatefulSet recreates the pod); the pod annotation mirrors it.
 */
export const FENCED_INSTANCES_ANNOTATION = 'nox.dev/fenced-instances';

const lsnPattern = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** "16/B374D848" → 64-bit position; undefined when it is not an LSN. */
export function parseLsn(lsn: string | undefined | null): bigint | undefined {
  if (typeof lsn !== 'string') return undefined;
  const m = lsnPattern.exec(lsn.trim());
  if (!m) return undefined;
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** The 64-bit position back as PostgreSQL prints it ("X/Y", upper-case hex). */
export function formatLsn(pos: bigint): string {
  const hi = (pos >> 32n) & 0xffffffffn;
  const lo = pos & 0xffffffffn;
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}

/** -1, 0 or 1; an unparseable LSN sorts before every real one (and equal to another unparseable). */
export function compareLsn(a: string | undefined, b: string | undefined): -1 | 0 | 1 {
  const x = parseLsn(a);
  const y = parseLsn(b);
  if (x === undefined) return y === undefined ? 0 : -1;
  if (y === undefined) return 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Bytes `replica` is behind `primary` (0 when ahead); undefined when either is unparseable. */
export function lagBytes(primary: string | undefined, replica: string | undefined): number | undefined {
  const p = parseLsn(primary);
  const r = parseLsn(replica);
  if (p === undefined || r === undefined) return undefined;
  return p > r ? Number(p - r) : 0;
}

export interface ReplicaPosition {
  readonly pod: string;
  /** pg_last_wal_receive_lsn() */
  readonly receivedLsn?: string;
  /** pg_last_wal_replay_lsn() */
  readonly replayedLsn?: string;
  readonly ready: boolean;
  readonly fenced: boolean;
}

/**
 * The end of the WAL a replica holds: the greater of its received and replayed positions.
 * Neither alone will do. After a restart pg_last_wal_receive_lsn() is the start of the
 * segment streaming resumes from (or NULL until the startup process asks for a stream), which
 * can be far behind WAL it has on disk and replays; and replay trails what was received while
 * streaming. The greater is final only once replay has stopped (promotion.ts checks that).
 */
export function heldLsn(r: Pick<ReplicaPosition, 'receivedLsn' | 'replayedLsn'>): string | undefined {
  const held = compareLsn(r.receivedLsn, r.replayedLsn) >= 0 ? r.receivedLsn : r.replayedLsn;
  return parseLsn(held) === undefined ? undefined : held;
}

/**
 * How many standbys a primary with this synchronous_standby_names waits for before it
 * acknowledges a commit: "ANY 2 (a, b, c)", "FIRST 1 (...)", "2 (...)" and a bare list (1);
 * '' is 0 (asynchronous). Undefined when it cannot be read, so the caller keeps what it knew.
 */
export function parseSynchronousNumber(names: string | undefined): number | undefined {
  if (names === undefined) return undefined;
  const s = names.trim();
  if (s === '') return 0;
  const m = /^(?:(?:ANY|FIRST)\s+)?(\d+)\s*\(/i.exec(s);
  if (m) return Number(m[1]);
  // A plain list (or '*') is FIRST 1.
  return /^[^()]+$/.test(s) ? 1 : undefined;
}

/** StatefulSet ordinal of a pod name ("pg-12" → 12); Infinity when there is none. */
export function ordinalOf(pod: string): number {
  const m = /-(\d+)$/.exec(pod);
  return m ? Number(m[1]) : Number.POSITIVE_INFINITY;
}

/**
 * The replica to promote: among the ready, unfenced replicas whose held position (heldLsn) is
 * known, the one holding the most WAL, then the most advanced replayed position (an unknown
 * replay position ranks lowest), then the lowest ordinal (then name) so that the answer is
 * deterministic. A replica whose positions cannot be read is never chosen: nothing proves it
 * holds every acknowledged commit. Undefined when there is no candidate.
 */
export function chooseFailoverTarget<R extends ReplicaPosition>(replicas: readonly R[]): R | undefined {
  let best: R | undefined;
  for (const r of replicas) {
    if (!r.ready || r.fenced || heldLsn(r) === undefined) continue;
    if (!best || better(r, best)) best = r;
  }
  return best;
}

function better(a: ReplicaPosition, b: ReplicaPosition): boolean {
  const held = compareLsn(heldLsn(a), heldLsn(b));
  if (held !== 0) return held > 0;
  const replayed = compareLsn(a.replayedLsn, b.replayedLsn);
  if (replayed !== 0) return replayed > 0;
  const oa = ordinalOf(a.pod);
  const ob = ordinalOf(b.pod);
  if (oa !== ob) return oa < ob;
  return a.pod < b.pod;
}

/**
 * With synchronous replication every acknowledged commit is on at least `syncNumber` of the
 * `totalReplicas` replicas (Quorum; with First the same bound holds). The most advanced of the
 * replicas the operator can read is sure to hold them all only when it read at least
 * totalReplicas - syncNumber + 1 of them. Without synchronous replication (syncNumber 0) any
 * single replica will do, accepting the loss asynchronous replication allows. Never fewer than one.
 */
export function replicasNeededForSafeFailover(totalReplicas: number, syncNumber: number): number {
  return syncNumber > 0 ? Math.max(totalReplicas - syncNumber + 1, 1) : 1;
}

/** Whether `readable` replicas are enough (replicasNeededForSafeFailover). */
export function enoughReplicasForSafeFailover(
  readable: number,
  totalReplicas: number,
  syncNumber: number,
): boolean {
  return readable >= replicasNeededForSafeFailover(totalReplicas, syncNumber);
}

export interface PodMetadataPatch {
  metadata: { labels?: Record<string, string | null>; annotations?: Record<string, string | null> };
}

interface PodLike {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
}

/**
 * JSON merge patch setting the pod's role label (what the -rw and -ro Services select on);
 * undefined when the pod already has that role, so the reconciler sends nothing.
 */
export function primaryLabelPatch(pod: PodLike, role: InstanceRole): PodMetadataPatch | undefined {
  if (pod.metadata?.labels?.[ROLE_LABEL] === role) return undefined;
  return { metadata: { labels: { [ROLE_LABEL]: role } } };
}

/**
 * JSON merge patch fencing (or unfencing) a pod: the annotation the instance manager reads
 * through the downward API, and, when fencing, the role label "fenced" so that neither -rw nor
 * -ro routes to it. Unfencing removes the annotation; the role is set separately once decided.
 * Undefined when the pod is already in that state.
 */
export function fencingAnnotation(pod: PodLike, fenced: boolean): PodMetadataPatch | undefined {
  const isFenced = pod.metadata?.annotations?.[FENCING_ANNOTATION] === 'true';
  if (fenced) {
    if (isFenced && pod.metadata?.labels?.[ROLE_LABEL] === 'fenced') return undefined;
    return {
      metadata: { annotations: { [FENCING_ANNOTATION]: 'true' }, labels: { [ROLE_LABEL]: 'fenced' } },
    };
  }
  if (!isFenced && pod.metadata?.annotations?.[FENCING_ANNOTATION] === undefined) return undefined;
  return { metadata: { annotations: { [FENCING_ANNOTATION]: null } } };
}

/** The fenced instances recorded on the cluster; a malformed value reads as none. */
export function fencedInstances(annotations: Record<string, string> | undefined): string[] {
  const raw = annotations?.[FENCED_INSTANCES_ANNOTATION];
  if (!raw) return [];
  try {
    const v: unknown = JSON.parse(raw);
    return Array.isArray(v) ? [...new Set(v.filter((x): x is string => typeof x === 'string'))].sort() : [];
  } catch {
    return [];
  }
}

/** Merge patch for the cluster's annotation recording the fenced instances (null removes it). */
export function fencedInstancesPatch(pods: readonly string[]): {
  metadata: { annotations: Record<string, string | null> };
} {
  const list = [...new Set(pods)].sort();
  return {
    metadata: { annotations: { [FENCED_INSTANCES_ANNOTATION]: list.length ? JSON.stringify(list) : null } },
  };
}
