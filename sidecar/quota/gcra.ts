/**
 * GCRA (generic cell rate algorithm) for a limit of `requests` per `windowMs`: each
 * request of cost c moves the subject's theoretical arrival time (TAT) by c·T, with
 * T = windowMs / requests; it is admitted while TAT − now ≤ windowMs, so at most
 * `requests` are admitted back to back and then one per T. The Redis Lua script in
 * redisStore.ts implements exactly this; this module is its reference and the
 * in-process store's engine.
 */

export interface GcraLimit {
  readonly requests: number;
  readonly windowMs: number;
}

export interface GcraOutcome {
  readonly allowed: boolean;
  /** The TAT to store if every limit of the check allows. */
  readonly newTat: number;
  /** Requests (of cost 1) still admissible right now after this one. */
  readonly remaining: number;
  /** Milliseconds until the limit is fully available again. */
  readonly resetMs: number;
  /** When denied: milliseconds until this request would be admitted. */
  readonly retryAfterMs: number;
}

export function gcra(limit: GcraLimit, tat: number | undefined, now: number, cost: number): GcraOutcome {
  const interval = limit.windowMs / limit.requests;
  const base = Math.max(tat ?? now, now);
  const newTat = base + cost * interval;
  const allowAt = newTat - limit.windowMs;
  if (allowAt > now) {
    return {
      allowed: false,
      newTat: base,
      remaining: Math.max(0, Math.floor((limit.windowMs - (base - now)) / interval)),
      resetMs: Math.ceil(base - now),
      retryAfterMs: Math.ceil(allowAt - now),
    };
  }
  return {
    allowed: true,
    newTat,
    remaining: Math.max(0, Math.floor((limit.windowMs - (newTat - now)) / interval)),
    resetMs: Math.ceil(newTat - now),
    retryAfterMs: 0,
  };
}
