import type { LimitCheck, QuotaResult, QuotaStore } from '../../sidecar/quota/store.js';

/** One charge the quota stage would make: the limits of one QuotaPolicy tier, and the cost. */
export interface PreviewedCharge {
  readonly checks: readonly LimitCheck[];
  readonly cost: number;
  /** What the live counters say (dry run: nothing charged); undefined when none were read. */
  readonly live?: QuotaResult;
}

/**
 * The quota store explain runs the real quota stage against: it records what the stage would
 * charge and charges nothing. With the sidecars' store (`--redis`), each limit is read in the
 * store's own dry-run mode, so the answer includes a quota already used up; without it, the
 * counters are not read and the charge is reported as "if there is room", which the
 * explanation says in so many words.
 */
export class PreviewQuotaStore implements QuotaStore {
  readonly name = 'preview';
  #charges: PreviewedCharge[] = [];

  constructor(private readonly live?: QuotaStore) {}

  /** The charges recorded since the last call, and a fresh record for the next request. */
  takeCharges(): PreviewedCharge[] {
    const out = this.#charges;
    this.#charges = [];
    return out;
  }

  get readsCounters(): boolean {
    return this.live !== undefined;
  }

  async take(
    limits: readonly LimitCheck[],
    cost: number,
    now: number,
    _dryRun: boolean,
    signal?: AbortSignal,
  ): Promise<QuotaResult> {
    if (this.live) {
      const live = await this.live.take(limits, cost, now, true, signal);
      this.#charges.push({ checks: limits, cost, live });
      return live;
    }
    this.#charges.push({ checks: limits, cost });
    return {
      allowed: true,
      limits: limits.map((l) => ({
        key: l.key,
        allowed: true,
        remaining: Math.max(0, l.requests - cost),
        resetMs: l.windowMs ?? Math.max(0, (l.resetAt ?? now) - now),
        retryAfterMs: 0,
      })),
    };
  }

  async close(): Promise<void> {
    await this.live?.close();
  }
}
