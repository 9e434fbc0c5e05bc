import { Counter, type Registry } from 'prom-client';
import type { SubjectObservation } from '../risk/subjectFeatures.js';
import type { LimitCheck, QuotaResult, QuotaStore } from './store.js';

interface Denial {
  readonly until: number;
  readonly result: QuotaResult;
  readonly at: number;
}

/**
 * A subject known to be over quota is answered here until the time its request could
 * first pass, without a Redis round trip. The cache only ever repeats a denial, so it can
 * never admit more than the store would. A denial is remembered for the limits it was
 * computed with: the key holds every limit's `requests`, so a changed override misses it,
 * and a new policy snapshot drops them all (policyChanged), so a raised limit applies from
 * the next check instead of after the old Retry-After.
 */
export class DenyCachingStore implements QuotaStore {
  readonly name: string;
  readonly #denials = new Map<string, Denial>();
  readonly #hits: Counter;

  constructor(
    private readonly inner: QuotaStore,
    registry: Registry,
    private readonly maxEntries = 100_000,
    private readonly clock: () => number = Date.now,
  ) {
    this.name = inner.name;
    this.#hits = new Counter({
      name: 'nox_quota_local_deny_hits_total',
      help: 'Checks denied from the local deny cache, without a store round trip.',
      registers: [registry],
    });
  }

  async take(
    limits: readonly LimitCheck[],
    cost: number,
    now: number,
    dryRun: boolean,
    signal?: AbortSignal,
    observe?: SubjectObservation,
  ): Promise<QuotaResult> {
    let key = String(cost);
    for (const l of limits) key += `|${l.key}#${l.requests}`;
    const t = this.clock();
    const cached = this.#denials.get(key);
    if (cached) {
      if (cached.until > t) {
        this.#hits.inc();
        return age(cached.result, t - cached.at);
      }
      this.#denials.delete(key);
    }
    // A hit above is not observed for risk: its check is refused before risk could matter.
    const result = await this.inner.take(limits, cost, now, dryRun, signal, observe);
    if (!result.allowed && !dryRun) {
      const wait = Math.max(...result.limits.filter((l) => !l.allowed).map((l) => l.retryAfterMs));
      if (wait > 0) {
        if (this.#denials.size >= this.maxEntries) this.#evict(t);
        this.#denials.set(key, { until: t + wait, result, at: t });
      }
    }
    return result;
  }

  #evict(now: number): void {
    for (const [k, d] of this.#denials) if (d.until <= now) this.#denials.delete(k);
    // Still full: drop the oldest (Map iterates in insertion order). Dropping only costs a round trip.
    for (const k of this.#denials.keys()) {
      if (this.#denials.size < this.maxEntries) break;
      this.#denials.delete(k);
    }
  }

  recordFailures(counts: ReadonlyMap<string, number>, now: number): Promise<void> {
    return this.inner.recordFailures?.(counts, now) ?? Promise.resolve();
  }

  policyChanged(): void {
    this.#denials.clear();
    this.inner.policyChanged?.();
  }

  close(): Promise<void> {
    this.#denials.clear();
    return this.inner.close();
  }
}

function age(r: QuotaResult, elapsed: number): QuotaResult {
  return {
    allowed: false,
    limits: r.limits.map((l) => ({
      ...l,
      resetMs: Math.max(0, l.resetMs - elapsed),
      retryAfterMs: Math.max(0, l.retryAfterMs - elapsed),
    })),
  };
}
