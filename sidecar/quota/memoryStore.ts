import { gcra } from './gcra.js';
import {
  calendarCheck,
  type LimitCheck,
  type LimitState,
  type QuotaResult,
  type QuotaStore,
} from './store.js';

interface Entry {
  /** TAT for GCRA limits, used count for calendar limits. */
  value: number;
  expiresAt: number;
}

/**
 * In-process store for standalone mode and the demo: the same semantics as the Redis
 * store (same GCRA, same calendar counters, same all-or-nothing charge), state in a Map.
 * Expired entries are swept lazily, so memory follows the active subjects.
 */
export class MemoryQuotaStore implements QuotaStore {
  readonly name = 'memory';
  readonly #entries = new Map<string, Entry>();
  #lastSweep = 0;

  get size(): number {
    return this.#entries.size;
  }

  async take(
    limits: readonly LimitCheck[],
    cost: number,
    now: number,
    dryRun: boolean,
  ): Promise<QuotaResult> {
    this.#sweep(now);
    const states: (LimitState & { store: Entry })[] = [];
    for (const l of limits) {
      const cur = this.#entries.get(l.key);
      const live = cur && cur.expiresAt > now ? cur.value : undefined;
      if (l.windowMs !== undefined) {
        const o = gcra({ requests: l.requests, windowMs: l.windowMs }, live, now, cost);
        states.push({ key: l.key, ...o, store: { value: o.newTat, expiresAt: o.newTat } });
      } else {
        const o = calendarCheck(l, live ?? 0, cost, now);
        states.push({ ...o, store: { value: o.newUsed, expiresAt: l.resetAt! } });
      }
    }
    const allowed = states.every((s) => s.allowed);
    if (allowed && !dryRun) for (const s of states) this.#entries.set(s.key, s.store);
    return { allowed, limits: states.map(({ store: _s, ...rest }) => rest) };
  }

  #sweep(now: number): void {
    if (now - this.#lastSweep < 10_000) return;
    this.#lastSweep = now;
    for (const [k, e] of this.#entries) if (e.expiresAt <= now) this.#entries.delete(k);
  }

  async close(): Promise<void> {
    this.#entries.clear();
  }
}
