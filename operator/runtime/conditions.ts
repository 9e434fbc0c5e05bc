import type { ConditionReason } from '../reasons.js';

/**
 * Standard status conditions (metav1.Condition): type, status, reason, message,
 * observedGeneration, lastTransitionTime. The transition time changes only when the
 * status does, so "Ready since" stays meaningful across reconciles that change nothing.
 */

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: string;
  status: ConditionStatus;
  reason?: string;
  message?: string;
  observedGeneration?: number;
  lastTransitionTime?: string;
}

export interface ConditionInput {
  type: string;
  status: ConditionStatus;
  /** CamelCase, machine-readable, from the operator's closed list (reasons.ts). */
  reason: ConditionReason;
  /** What a user can do about it. */
  message: string;
  observedGeneration?: number;
}

/** The API server's limit on a condition message. */
const maxMessage = 32_768;

/** Kubernetes' timestamp form (RFC 3339, seconds precision, UTC). */
export function timestamp(now: Date): string {
  return `${now.toISOString().slice(0, 19)}Z`;
}

/**
 * `conditions` with `next` set: a new array (the input is not changed), the condition kept
 * in place if it existed, its lastTransitionTime carried over unless the status changed.
 */
export function setCondition(
  conditions: readonly Condition[] | undefined,
  next: ConditionInput,
  now: Date = new Date(),
): Condition[] {
  const list = [...(conditions ?? [])];
  const i = list.findIndex((c) => c.type === next.type);
  const prev = i >= 0 ? list[i] : undefined;
  const message =
    next.message.length > maxMessage ? `${next.message.slice(0, maxMessage - 1)}…` : next.message;
  const cond: Condition = {
    type: next.type,
    status: next.status,
    reason: next.reason,
    message,
    ...(next.observedGeneration !== undefined ? { observedGeneration: next.observedGeneration } : {}),
    lastTransitionTime:
      prev && prev.status === next.status && prev.lastTransitionTime
        ? prev.lastTransitionTime
        : timestamp(now),
  };
  if (i >= 0) list[i] = cond;
  else list.push(cond);
  return list;
}

export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

/** True when both lists say the same (order and transition times included). */
export function sameConditions(
  a: readonly Condition[] | undefined,
  b: readonly Condition[] | undefined,
): boolean {
  const norm = (l: readonly Condition[] | undefined) =>
    (l ?? []).map((c) => [
      c.type,
      c.status,
      c.reason ?? '',
      c.message ?? '',
      c.observedGeneration ?? -1,
      c.lastTransitionTime ?? '',
    ]);
  return JSON.stringify(norm(a)) === JSON.stringify(norm(b));
}
