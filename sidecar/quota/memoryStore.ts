import { Counter, Gauge, type Registry } from 'prom-client';
import { MemorySubjectStates, type SubjectObservation } from '../risk/subjectFeatures.js';
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
  /** When the state no longer matters: the TAT (GCRA), the period's end (calendar). */
  expiresAt: number;
}

export interface MemoryStoreOptions {
  /**
   * At most this many limit states (one per subject × limit) are kept; past it the least
   * recently used one is dropped, and that subject starts afresh on its next check.
   */
  readonly maxEntries?: number;
  readonly registry?: Registry;
}

export const defaultMemoryMaxEntries = 100_000;

/**
 * In-process store for standalone mode and the demo: the same semantics as the Redis
 * store (same GCRA, same calendar counters, same all-or-nothing charge), state in a Map
 * kept in least-recently-used order and bounded by `maxEntries`, so no flood of subjects
 * can grow the process without bound. A state lives only as long as it can matter: a
 * rolling window's until its TAT (at most one window after the last charge), a calendar
 * counter's until its period ends; expired states are dropped as the store is used.
 */
export class MemoryQuotaStore implements QuotaStore {
  readonly name = 'memory';
  readonly maxEntries: number;
  /** Oldest use first: a Map iterates in insertion order, and every use re-inserts. */
  readonly #entries = new Map<string, Entry>();
  #lastSweep = 0;
  readonly #evicted: Counter | undefined;
  /** The risk model's view of subjects (observed with `observe`), bounded like the limits. */
  readonly #subjects: MemorySubjectStates;

  constructor(opts: MemoryStoreOptions = {}) {
    this.maxEntries = Math.max(1, opts.maxEntries ?? defaultMemoryMaxEntries);
    this.#subjects = new MemorySubjectStates(this.maxEntries);
    if (opts.registry) {
      this.#evicted = new Counter({
        name: 'nox_quota_memory_evictions_total',
        help: 'Live quota states the memory store dropped because it held NOX_QUOTA_MEMORY_MAX_ENTRIES (their subjects start afresh).',
        registers: [opts.registry],
      });
      const entries: Gauge = new Gauge({
        name: 'nox_quota_memory_entries',
        help: 'Quota states (subject × limit) the memory store holds; at most NOX_QUOTA_MEMORY_MAX_ENTRIES.',
        registers: [opts.registry],
        collect: (): void => entries.set(this.#entries.size),
      });
    }
  }

  get size(): number {
    return this.#entries.size;
  }

  async take(
    limits: readonly LimitCheck[],
    cost: number,
    now: number,
    dryRun: boolean,
    _signal?: AbortSignal,
    observe?: SubjectObservation,
  ): Promise<QuotaResult> {
    this.#sweep(now);
    const features = observe ? { features: this.#subjects.observe(observe, now) } : {};
    const states: (LimitState & { value: number; expiresAt: number })[] = [];
    for (const l of limits) {
      const cur = this.#entries.get(l.key);
      const live = cur && cur.expiresAt > now ? cur.value : undefined;
      if (l.windowMs !== undefined) {
        const o = gcra({ requests: l.requests, windowMs: l.windowMs }, live, now, cost);
        states.push({
          key: l.key,
          allowed: o.allowed,
          remaining: o.remaining,
          resetMs: o.resetMs,
          retryAfterMs: o.retryAfterMs,
          value: o.newTat,
          expiresAt: o.newTat,
        });
      } else {
        const o = calendarCheck(l, live ?? 0, cost, now);
        states.push({
          key: l.key,
          allowed: o.allowed,
          remaining: o.remaining,
          resetMs: o.resetMs,
          retryAfterMs: o.retryAfterMs,
          value: o.newUsed,
          expiresAt: l.resetAt!,
        });
      }
    }
    const allowed = states.every((s) => s.allowed);
    for (const s of states) {
      const cur = this.#entries.get(s.key);
      if (allowed && !dryRun) {
        // Re-inserted at the young end; the old object is reused.
        if (cur) this.#entries.delete(s.key);
        const e = cur ?? { value: 0, expiresAt: 0 };
        e.value = s.value;
        e.expiresAt = s.expiresAt;
        this.#entries.set(s.key, e);
      } else if (cur) {
        if (cur.expiresAt <= now) {
          this.#entries.delete(s.key);
        } else {
          // A subject being denied is in use too: its state must outlive idle ones.
          this.#entries.delete(s.key);
          this.#entries.set(s.key, cur);
        }
      }
    }
    this.#bound(now);
    return {
      ...features,
      allowed,
      limits: states.map((s) => ({
        key: s.key,
        allowed: s.allowed,
        remaining: s.remaining,
        resetMs: s.resetMs,
        retryAfterMs: s.retryAfterMs,
      })),
    };
  }

  /** Drops least recently used states past the cap; an expired one goes without a count. */
  #bound(now: number): void {
    for (const [k, e] of this.#entries) {
      if (this.#entries.size <= this.maxEntries) return;
      this.#entries.delete(k);
      if (e.expiresAt > now) this.#evicted?.inc();
    }
  }

  #sweep(now: number): void {
    if (now - this.#lastSweep < 10_000) return;
    this.#lastSweep = now;
    for (const [k, e] of this.#entries) if (e.expiresAt <= now) this.#entries.delete(k);
  }

  async recordFailures(counts: ReadonlyMap<string, number>, now: number): Promise<void> {
    for (const [tag, n] of counts) this.#subjects.fail(tag, n, now);
  }

  async close(): Promise<void> {
    this.#entries.clear();
    this.#subjects.clear();
  }
}
