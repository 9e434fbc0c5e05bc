import type { SubjectFeatures, SubjectObservation } from '../risk/subjectFeatures.js';

/**
 * The quota store: one atomic check-and-charge of every limit of one subject. All limits
 * pass and are all charged, or none is charged.
 */

export interface LimitCheck {
  /** Store key of this limit's state; every key of one check shares the subject's hash tag. */
  readonly key: string;
  readonly requests: number;
  /** Rolling window: GCRA. */
  readonly windowMs?: number;
  /** Calendar window: a counter that expires at `resetAt` (ms since epoch). */
  readonly resetAt?: number;
}

export interface LimitState {
  readonly key: string;
  readonly allowed: boolean;
  readonly remaining: number;
  readonly resetMs: number;
  readonly retryAfterMs: number;
}

export interface QuotaResult {
  readonly allowed: boolean;
  readonly limits: readonly LimitState[];
  /** With an observation: the subject's behaviour, this request included. */
  readonly features?: SubjectFeatures;
}

export interface QuotaStore {
  readonly name: string;
  /**
   * `dryRun`: evaluate without charging. `observe`: also record the request in the subject's
   * risk state and return its features, in the same call (its tag must be the limits' tag;
   * with no limits, only that).
   */
  take(
    limits: readonly LimitCheck[],
    cost: number,
    now: number,
    dryRun: boolean,
    signal?: AbortSignal,
    observe?: SubjectObservation,
  ): Promise<QuotaResult>;
  /**
   * Adds refused checks to subjects' risk state (tag → how many): read back as their
   * failures by the next observation. Not on a check's path: the caller batches them.
   */
  recordFailures?(counts: ReadonlyMap<string, number>, now: number): Promise<void>;
  /**
   * A new policy snapshot is in force: forget what was derived from the old limits (the
   * local deny cache), so a raised limit applies from the next check.
   */
  policyChanged?(): void;
  close(): Promise<void>;
}

/** Pure evaluation of a fixed calendar counter. */
export function calendarCheck(
  limit: LimitCheck,
  used: number,
  cost: number,
  now: number,
): LimitState & { newUsed: number } {
  const resetMs = Math.max(0, limit.resetAt! - now);
  if (used + cost > limit.requests) {
    return {
      key: limit.key,
      allowed: false,
      remaining: Math.max(0, limit.requests - used),
      resetMs,
      retryAfterMs: resetMs,
      newUsed: used,
    };
  }
  return {
    key: limit.key,
    allowed: true,
    remaining: limit.requests - used - cost,
    resetMs,
    retryAfterMs: 0,
    newUsed: used + cost,
  };
}
