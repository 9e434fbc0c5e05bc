import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';

/**
 * Hourly quota usage per (subject, policy, tier), summed in memory on the request path and
 * written to quota_usage_hourly off it. PostgreSQL being down costs memory, not requests:
 * counts wait for the next flush, and only what a committed statement wrote is forgotten.
 */

export interface UsageEvent {
  readonly subjectHash: string;
  readonly policy: string;
  readonly tier: string;
  /** What the request charged; a denied request charges nothing, whatever is passed. */
  readonly cost: number;
  readonly allowed: boolean;
  /** Milliseconds since the epoch. */
  readonly at: number;
}

export interface UsageRollupOptions {
  /** Give it connectionTimeoutMillis and query_timeout: a flush waits for nothing longer than those. */
  readonly pool: pg.Pool;
  readonly registry: Registry;
  readonly log: Logger;
  /** Default 10 s. */
  readonly intervalMs?: number;
  /** Most (subject, policy, tier, hour) aggregates held unwritten; beyond it events are dropped (counted). Default 100 000. */
  readonly maxPending?: number;
  /** Rows per INSERT statement; default 500. */
  readonly batchSize?: number;
}

export interface FlushResult {
  /** Rows committed by this flush. */
  readonly written: number;
  /** Aggregates still waiting. */
  readonly pending: number;
}

interface Row {
  readonly subjectHash: string;
  readonly policy: string;
  readonly tier: string;
  readonly hour: number;
  requests: number;
  denied: number;
  cost: number;
}

/** Rows sent as one statement under one id, so a retry after an unacknowledged commit is a no-op. */
interface Batch {
  readonly id: string;
  readonly rows: readonly Row[];
}

const HOUR_MS = 3_600_000;
/** Longer than any batch can wait for a retry; the dedup table is pruned beyond it. */
const BATCH_ID_RETENTION = '7 days';
const PRUNE_EVERY_MS = HOUR_MS;

const UPSERT = `
WITH batch AS (
  INSERT INTO quota_rollup_batches (id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id
)
INSERT INTO quota_usage_hourly AS u (subject_hash, policy, tier, hour, requests, denied, cost)
SELECT r.* FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[], $7::bigint[], $8::bigint[])
  AS r (subject_hash, policy, tier, hour, requests, denied, cost)
WHERE EXISTS (SELECT 1 FROM batch)
ON CONFLICT (subject_hash, policy, tier, hour) DO UPDATE SET
  requests = u.requests + excluded.requests,
  denied = u.denied + excluded.denied,
  cost = u.cost + excluded.cost`;

export class UsageRollup {
  readonly #pool: pg.Pool;
  readonly #log: Logger;
  readonly #maxPending: number;
  readonly #batchSize: number;
  readonly #live = new Map<string, Row>();
  /** Sent or about to be sent, commit not confirmed; retried verbatim, never merged with newer counts. */
  readonly #unconfirmed: Batch[] = [];
  #unconfirmedRows = 0;
  #tail: Promise<unknown> = Promise.resolve();
  #flushing = 0;
  #closed = false;
  #droppedSinceLog = 0;
  #lastPrune = 0;
  readonly #timer: NodeJS.Timeout;
  readonly #onPoolError = (err: Error) =>
    this.#log.warn({ err: err.message }, 'an idle PostgreSQL connection of the usage rollup failed');
  readonly #written: Counter;
  readonly #seconds: Histogram;
  readonly #errors: Counter;
  readonly #dropped: Counter;

  constructor(opts: UsageRollupOptions) {
    this.#pool = opts.pool;
    this.#log = opts.log;
    this.#maxPending = opts.maxPending ?? 100_000;
    this.#batchSize = opts.batchSize ?? 500;
    const registers = [opts.registry];
    this.#written = new Counter({
      name: 'nox_quota_rollups_written_total',
      help: 'Rows of hourly quota usage committed to PostgreSQL.',
      registers,
    });
    this.#seconds = new Histogram({
      name: 'nox_quota_rollup_flush_seconds',
      help: 'Duration of one flush of the quota usage rollup, failed ones included.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.#errors = new Counter({
      name: 'nox_quota_rollup_errors_total',
      help: 'Flushes of the quota usage rollup that failed; their counts stay pending.',
      registers,
    });
    this.#dropped = new Counter({
      name: 'nox_quota_rollup_dropped_total',
      help: 'Usage events (or rows PostgreSQL rejected as invalid) lost because the pending cap was reached.',
      registers,
    });
    const pending = () => this.pending;
    new Gauge({
      name: 'nox_quota_rollup_pending',
      help: 'Aggregates of quota usage not yet committed to PostgreSQL.',
      registers,
      collect() {
        this.set(pending());
      },
    });
    // Without a listener, an idle connection dropped by a PostgreSQL restart would crash the process.
    this.#pool.on('error', this.#onPoolError);
    this.#timer = setInterval(() => {
      if (this.#flushing === 0) this.flush().catch(() => {});
    }, opts.intervalMs ?? 10_000);
    this.#timer.unref();
  }

  get pending(): number {
    return this.#live.size + this.#unconfirmedRows;
  }

  /** Synchronous and O(1): a map lookup and three additions. */
  record(e: UsageEvent): void {
    const hour = Math.floor(e.at / HOUR_MS) * HOUR_MS;
    const key = `${e.subjectHash}\0${e.policy}\0${e.tier}\0${hour}`;
    let row = this.#live.get(key);
    if (row === undefined) {
      if (this.#closed || this.pending >= this.#maxPending) {
        this.#drop();
        return;
      }
      row = {
        subjectHash: e.subjectHash,
        policy: e.policy,
        tier: e.tier,
        hour,
        requests: 0,
        denied: 0,
        cost: 0,
      };
      this.#live.set(key, row);
    }
    row.requests += 1;
    // A non-integer cost would make the bigint insert fail on every retry.
    if (e.allowed) row.cost += Math.max(0, Math.round(e.cost)) || 0;
    else row.denied += 1;
  }

  /** Writes everything pending. Rejects if PostgreSQL fails; what was not committed stays pending. */
  flush(): Promise<FlushResult> {
    this.#flushing += 1;
    const run = this.#tail.then(() => this.#flushOnce()).finally(() => (this.#flushing -= 1));
    this.#tail = run.catch(() => {});
    return run;
  }

  /** Stops the timer and flushes once more; rejects (after logging what is lost) if that fails. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    try {
      await this.flush();
    } catch (e) {
      this.#log.error({ err: (e as Error).message, lost: this.pending }, 'quota usage not written at close');
      throw e;
    } finally {
      this.#pool.off('error', this.#onPoolError);
    }
  }

  async #flushOnce(): Promise<FlushResult> {
    const end = this.#seconds.startTimer();
    let written = 0;
    try {
      // Older batches first, and new counts are only cut into batches once those are confirmed:
      // during an outage memory holds one set of batches plus the live map, not one per attempt.
      written += await this.#sendUnconfirmed();
      const rows = [...this.#live.values()].sort(byKey);
      this.#live.clear();
      for (let i = 0; i < rows.length; i += this.#batchSize) {
        const batch = rows.slice(i, i + this.#batchSize);
        this.#unconfirmed.push({ id: randomUUID(), rows: batch });
        this.#unconfirmedRows += batch.length;
      }
      written += await this.#sendUnconfirmed();
    } catch (e) {
      this.#errors.inc();
      this.#log.warn(
        { err: (e as Error).message, written, pending: this.pending },
        'quota usage flush failed; counts kept for the next one',
      );
      throw e;
    } finally {
      end();
      if (this.#droppedSinceLog > 0) {
        this.#log.warn({ dropped: this.#droppedSinceLog }, 'quota usage events dropped since the last flush');
        this.#droppedSinceLog = 0;
      }
    }
    await this.#prune();
    return { written, pending: this.pending };
  }

  async #sendUnconfirmed(): Promise<number> {
    let written = 0;
    while (this.#unconfirmed.length > 0) {
      const batch = this.#unconfirmed[0]!;
      try {
        await this.#pool.query(UPSERT, columns(batch));
        this.#written.inc(batch.rows.length);
        written += batch.rows.length;
      } catch (e) {
        if (!rejectsData(e)) throw e;
        // Retrying a batch PostgreSQL rejects as invalid would block every later one forever.
        this.#dropped.inc(batch.rows.length);
        this.#log.error({ err: (e as Error).message, rows: batch.rows.length }, 'quota usage batch rejected');
      }
      this.#unconfirmed.shift();
      this.#unconfirmedRows -= batch.rows.length;
    }
    return written;
  }

  async #prune(): Promise<void> {
    const now = Date.now();
    if (now - this.#lastPrune < PRUNE_EVERY_MS) return;
    this.#lastPrune = now;
    await this.#pool
      .query(`DELETE FROM quota_rollup_batches WHERE applied_at < now() - interval '${BATCH_ID_RETENTION}'`)
      .catch((e: Error) => this.#log.warn({ err: e.message }, 'pruning quota_rollup_batches failed'));
  }

  #drop(): void {
    this.#dropped.inc();
    if (this.#droppedSinceLog++ === 0) {
      this.#log.warn(
        { pending: this.pending, maxPending: this.#maxPending, closed: this.#closed },
        'quota usage event dropped: the rollup is closed or holds too many aggregates',
      );
    }
  }
}

/** Class 22 (data exception) and 23 (integrity constraint violation): the same rows will fail again. */
function rejectsData(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('23'));
}

/** Every writer locks rows in the same order, so concurrent sidecars cannot deadlock. */
function byKey(a: Row, b: Row): number {
  return (
    cmp(a.subjectHash, b.subjectHash) || cmp(a.policy, b.policy) || cmp(a.tier, b.tier) || a.hour - b.hour
  );
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function columns(b: Batch): unknown[] {
  const r = b.rows;
  return [
    b.id,
    r.map((x) => x.subjectHash),
    r.map((x) => x.policy),
    r.map((x) => x.tier),
    r.map((x) => new Date(x.hour).toISOString()),
    r.map((x) => x.requests),
    r.map((x) => x.denied),
    r.map((x) => x.cost),
  ];
}
