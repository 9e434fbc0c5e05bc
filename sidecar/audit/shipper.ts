import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Logger } from '../../common/logger.js';
import type { AuditMetrics } from './metrics.js';
import type { Spool } from './spool.js';
import { AUDIT_TABLES, type AuditTable, copyData, decodeRecord, occurredAt } from './tables.js';

export interface ShipperOptions {
  readonly pool: pg.Pool;
  readonly spool: Spool;
  readonly log: Logger;
  readonly metrics: AuditMetrics;
  /** Records per transaction. */
  readonly batch: number;
  /** fsync the cursor after each commit (Durable). */
  readonly syncCursor: boolean;
  /**
   * After a batch smaller than `batch`, the shipper waits this long before the next one (new
   * records do not wake it; drained() and stop() do): one transaction, spool read and cursor
   * write per interval instead of one per spool write. Events reach PostgreSQL this much later.
   */
  readonly paceMs?: number;
}

/**
 * Moves the spool's records into PostgreSQL, oldest first, one transaction per batch, and only
 * then does the spool's cursor move. A batch is COPYed straight into its tables; one that hits
 * a row already there (its commit landed but the acknowledgement was lost: a failover, a
 * killed sidecar) rolls back whole and is sent again through a temporary table per audit table
 * with ON CONFLICT DO NOTHING, so a replay adds nothing. (Always staging would cost PostgreSQL,
 * on the sidecars' machines, twice the writing for every event, for the rare replay.) While
 * PostgreSQL fails, the batch is retried with backoff and the spool grows.
 */
export class Shipper {
  readonly #o: ShipperOptions;
  #stopped = false;
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #failing = false;
  #pacing = false;
  #idle: (() => void)[] = [];

  constructor(opts: ShipperOptions) {
    this.#o = opts;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /**
   * New records are in the spool. While PostgreSQL fails, the backoff decides, not new
   * records; right after a partial batch, the pace does.
   */
  kick(): void {
    if (!this.#failing && !this.#pacing) this.#wake?.();
  }

  /** Resolves when the spool is empty (everything committed), or after `timeoutMs`: false then. */
  async drained(timeoutMs: number): Promise<boolean> {
    if (this.#o.spool.bytes === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<boolean>((res) => this.#idle.push(() => res(true)));
    const late = new Promise<boolean>((res) => {
      timer = setTimeout(() => res(false), timeoutMs);
    });
    this.#wake?.();
    try {
      return await Promise.race([idle, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const { spool, log, metrics } = this.#o;
    let backoffMs = 100;
    while (!this.#stopped) {
      const batch = spool.read(this.#o.batch);
      if (batch.tornBytes > 0) {
        metrics.dropped.inc({ reason: 'torn' });
        log.error({ bytes: batch.tornBytes }, 'audit spool: skipped a record torn by a crash');
      }
      metrics.spoolBytes.set(spool.bytes);
      if (batch.records.length === 0) {
        if (batch.tornBytes > 0) spool.commit(batch.next, this.#o.syncCursor);
        metrics.lag.set(0);
        for (const done of this.#idle.splice(0)) done();
        await this.#sleep(1000);
        continue;
      }
      const rows = new Map<AuditTable, Buffer[]>();
      let oldest = Number.POSITIVE_INFINITY;
      let corrupt = 0;
      for (const r of batch.records) {
        const record = decodeRecord(r);
        if (!record) {
          corrupt++;
          continue;
        }
        const lines = rows.get(record.table);
        if (lines) lines.push(record.line);
        else {
          rows.set(record.table, [record.line]);
          oldest = Math.min(oldest, occurredAt(record.line));
        }
      }
      if (corrupt > 0) {
        metrics.dropped.inc({ reason: 'corrupt' }, corrupt);
        log.error({ records: corrupt }, 'audit spool: skipped records that do not decode');
      }
      if (Number.isFinite(oldest)) metrics.lag.set(Math.max(0, (Date.now() - oldest) / 1000));
      const started = performance.now();
      try {
        const result = await this.#ship(rows, 'direct')
          .catch((e: unknown) => {
            if ((e as { code?: unknown }).code !== UNIQUE_VIOLATION) throw e;
            return this.#ship(rows, 'deduplicated');
          })
          .catch((e: unknown) => {
            if (!refusedData(e)) throw e;
            return this.#shipEach(rows, e as Error);
          });
        spool.commit(batch.next, this.#o.syncCursor);
        metrics.flushSeconds.observe((performance.now() - started) / 1000);
        for (const [table, { inserted, sent }] of result) {
          metrics.written.inc({ table }, inserted);
          if (sent > inserted) metrics.duplicates.inc({ table }, sent - inserted);
          if (this.#failing) metrics.replayed.inc({ table }, sent);
        }
        if (this.#failing)
          log.info({ records: batch.records.length }, 'audit: PostgreSQL is back; replaying the spool');
        this.#failing = false;
        backoffMs = 100;
        if (batch.records.length < this.#o.batch && (this.#o.paceMs ?? 0) > 0) {
          this.#pacing = true;
          await this.#sleep(this.#o.paceMs!);
          this.#pacing = false;
        }
      } catch (e) {
        metrics.flushFailures.inc();
        if (!this.#failing)
          log.warn(
            { err: (e as Error).message, spoolBytes: spool.bytes },
            'audit: writing to PostgreSQL failed; events stay in the spool and are retried',
          );
        this.#failing = true;
        await this.#sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, 5000);
      }
    }
  }

  /**
   * One transaction. direct: per table, COPY into it (a row already there fails it all).
   * deduplicated: per table, COPY into a temporary table, then insert what is new.
   */
  async #ship(
    rows: Map<AuditTable, Buffer[]>,
    how: 'direct' | 'deduplicated',
  ): Promise<Map<AuditTable, { inserted: number; sent: number }>> {
    const client = await this.#o.pool.connect();
    // A connection that dies between two statements (a failover, a restart) reports it as an
    // 'error' event of the client, which the pool listens for only while the client is idle:
    // without a listener here it would end the process. The failed statement still throws.
    let died: Error | undefined;
    const onError = (e: Error) => {
      died = e;
    };
    client.on('error', onError);
    const result = new Map<AuditTable, { inserted: number; sent: number }>();
    let broken = false;
    try {
      await client.query('BEGIN');
      for (const [table, lines] of rows) {
        const cols = AUDIT_TABLES[table].join(', ');
        const copy = (into: string) =>
          new Promise<void>((resolve, reject) => {
            const stream = client.query(copyFrom(`COPY ${into} (${cols}) FROM STDIN (FORMAT text)`));
            stream.on('error', reject);
            stream.on('finish', resolve);
            stream.end(copyData(lines));
          });
        if (how === 'direct') {
          await copy(table);
          result.set(table, { inserted: lines.length, sent: lines.length });
          continue;
        }
        const staging = `nox_staging_${table}`;
        await client.query(
          `CREATE TEMP TABLE IF NOT EXISTS ${staging} (LIKE ${table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`,
        );
        await copy(staging);
        const r = await client.query(
          `INSERT INTO ${table} (${cols}) SELECT ${cols} FROM ${staging} ON CONFLICT DO NOTHING`,
        );
        result.set(table, { inserted: r.rowCount ?? 0, sent: lines.length });
      }
      await client.query('COMMIT');
      return result;
    } catch (e) {
      broken = true;
      throw e;
    } finally {
      client.removeListener('error', onError);
      // A connection that failed mid-transaction is not given back to the pool.
      client.release(broken || died !== undefined);
    }
  }

  /**
   * A batch PostgreSQL refused for its data (a value a column does not take): each record on
   * its own, so that one bad record is dropped (counted, logged) rather than holding up the
   * spool for ever behind it.
   */
  async #shipEach(
    rows: Map<AuditTable, Buffer[]>,
    cause: Error,
  ): Promise<Map<AuditTable, { inserted: number; sent: number }>> {
    this.#o.log.error(
      { err: cause.message },
      'audit: PostgreSQL refused a batch for its data; sending its records one by one',
    );
    const result = new Map<AuditTable, { inserted: number; sent: number }>();
    for (const [table, lines] of rows) {
      const r = { inserted: 0, sent: 0 };
      for (const line of lines) {
        try {
          const one = await this.#ship(new Map([[table, [line]]]), 'deduplicated');
          r.inserted += one.get(table)?.inserted ?? 0;
          r.sent++;
        } catch (e) {
          if (!refusedData(e)) throw e;
          this.#o.metrics.dropped.inc({ reason: 'refused' });
          this.#o.log.error(
            { table, err: (e as Error).message },
            'audit: PostgreSQL refused a record; dropped',
          );
        }
      }
      result.set(table, r);
    }
    return result;
  }

  /** Waits `ms`, or less when kicked or stopped. */
  #sleep(ms: number): Promise<void> {
    return new Promise((res) => {
      const timer = setTimeout(() => {
        this.#wake = undefined;
        res();
      }, ms);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        res();
      };
    });
  }
}

const UNIQUE_VIOLATION = '23505';

/** SQLSTATE class 22 (data exception) or 23 (integrity constraint): the data, not the server. */
function refusedData(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('23'));
}
