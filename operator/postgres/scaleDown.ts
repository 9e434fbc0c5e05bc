import { ordinalOf } from './desired.js';
import { compareLsn } from './failoverRules.js';
import type { InstanceView } from './roles.js';

/**
 * A scale-down removes replicas that may be the only ones holding some acknowledged commits:
 * under `ANY k (a, b, c)` a commit acknowledged by c alone is on c and the primary, and if the
 * primary is lost right after c is removed, the failover would promote b without it. And until
 * the primary reads the new synchronous_standby_names it waits for standbys that are going
 * away. So the StatefulSet keeps its size until:
 *
 * 1. the primary runs with the new synchronous_standby_names (SHOW, not the ConfigMap: the
 *    kubelet delivers that on its own schedule), from when every commit it acknowledges was
 *    flushed by the instances that stay; then
 * 2. `k` of the staying replicas have flushed up to the primary's position read at that moment
 *    (the barrier), so that every commit acknowledged before is on them too (WAL is flushed in
 *    order: a replica past the barrier has everything before it).
 *
 * The barrier lives in the operator's memory: an operator that restarts takes a new one, later
 * and so as safe.
 */
export interface ScaleDownGate {
  /** The instance count the gate was opened for. */
  readonly to: number;
  /** The primary's pg_current_wal_lsn() once it ran with the new names. */
  readonly barrier?: string;
}

export type ScaleDownStep =
  | { readonly release: true }
  | { readonly release: false; readonly gate: ScaleDownGate; readonly waitingFor: string };

export interface ScaleDownInput {
  /** spec.instances. */
  readonly to: number;
  /** The instances running now (the StatefulSet's size). */
  readonly from: number;
  /** synchronous_standby_names for spec.instances (desired.ts). */
  readonly names: string;
  /** Standbys that must have each commit (0 for asynchronous replication). */
  readonly syncNumber: number;
  readonly primary: InstanceView | undefined;
  readonly gate?: ScaleDownGate | undefined;
}

/** Whether the StatefulSet may shrink from `from` to `to` now, and what it waits for if not. */
export function scaleDownStep(input: ScaleDownInput): ScaleDownStep {
  const { to, from, names, syncNumber, primary } = input;
  if (to >= from) return { release: true };
  const gate = input.gate?.to === to ? input.gate : { to };
  const hold = (waitingFor: string, g: ScaleDownGate = gate): ScaleDownStep => ({
    release: false,
    gate: g,
    waitingFor,
  });
  const obs = primary?.obs;
  if (!primary || !obs?.reachable || obs.inRecovery || !obs.currentLsn)
    return hold('a primary that answers, to read its synchronous_standby_names');
  if (obs.syncStandbyNames !== names)
    return hold(
      `the primary to run with synchronous_standby_names = '${names}' (it has '${obs.syncStandbyNames}')`,
    );
  if (!gate.barrier) return hold(`replicas to flush past ${obs.currentLsn}`, { to, barrier: obs.currentLsn });
  const staying = (obs.standbys ?? []).filter((s) => {
    const ordinal = ordinalOf(s.name);
    return (
      Number.isInteger(ordinal) && ordinal < to && s.flushLsn && compareLsn(s.flushLsn, gate.barrier!) >= 0
    );
  });
  if (staying.length < syncNumber)
    return hold(
      `${syncNumber} of the staying replicas to flush past ${gate.barrier} (${staying.length} have)`,
    );
  return { release: true };
}
