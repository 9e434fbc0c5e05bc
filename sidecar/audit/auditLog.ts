import type pg from 'pg';
import type { Counter, Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { AuditUnavailable } from './errors.js';
import { type AuditMetrics, auditMetrics } from './metrics.js';
import { Shipper } from './shipper.js';
import { Spool, SpoolFull } from './spool.js';
import { type AuditRow, type AuditTable, encodeRecord } from './tables.js';

/**
 * - BestEffort: a check is answered without waiting for its event; events reach the spool
 *   within flushIntervalMs (one write per interval), so a SIGKILL of the sidecar loses at most
 *   the events of that interval. Graceful shutdown loses none.
 * - Durable: a check is answered only once its event is in the spool and fdatasync'd; the
 *   events of the checks that arrive while one group is being synced form the next group.
 */
export type AuditMode = 'BestEffort' | 'Durable';
/** A full spool: drop its oldest segment (counted and logged), or refuse the event (and deny its check). */
export type SpoolFullPolicy = 'DropOldest' | 'Deny';

export interface AuditLogOptions {
  readonly pool: pg.Pool;
  readonly registry: Registry;
  readonly log: Logger;
  readonly dir: string;
  readonly mode: AuditMode;
  readonly maxBytes: number;
  readonly whenFull: SpoolFullPolicy;
  /** BestEffort: how often buffered events are written to the spool. */
  readonly flushIntervalMs: number;
  /** Records per transaction to PostgreSQL. */
  readonly batch?: number;
  /** Least time between two partial batches to PostgreSQL (Shipper paceMs; default 500). */
  readonly shipPaceMs?: number;
  readonly segmentBytes?: number;
}

/**
 * The sidecar's audit log: events are buffered, appended to the spool in groups, and shipped
 * to PostgreSQL from there (spool.ts, shipper.ts). `record` never throws for a PostgreSQL
 * failure, which only makes the spool grow.
 */
export class AuditLog {
  readonly #o: AuditLogOptions;
  readonly #spool: Spool;
  readonly #shipper: Shipper;
  readonly #metrics: AuditMetrics;
  #pending: string[] = [];
  #pendingBytes = 0;
  #waiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  #writing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** The recorded counter's child per table: prom-client hashes a label object on every inc. */
  readonly #recordedBy = new Map<AuditTable, Counter.Internal>();

  constructor(opts: AuditLogOptions) {
    this.#o = opts;
    this.#metrics = auditMetrics(opts.registry);
    this.#spool = new Spool({
      dir: opts.dir,
      maxBytes: opts.maxBytes,
      ...(opts.segmentBytes ? { segmentBytes: opts.segmentBytes } : {}),
    });
    this.#metrics.spoolMaxBytes.set(opts.maxBytes);
    this.#metrics.spoolBytes.set(this.#spool.bytes);
    this.#shipper = new Shipper({
      pool: opts.pool,
      spool: this.#spool,
      log: opts.log,
      metrics: this.#metrics,
      batch: opts.batch ?? 2000,
      syncCursor: opts.mode === 'Durable',
      paceMs: opts.shipPaceMs ?? 500,
    });
    if (this.#spool.bytes > 0)
      opts.log.info(
        { bytes: this.#spool.bytes },
        'audit: events left in the spool by the last run are replayed',
      );
    this.#shipper.start();
  }

  #recorded(table: AuditTable): Counter.Internal {
    let child = this.#recordedBy.get(table);
    if (!child) {
      child = this.#metrics.recorded.labels({ table });
      this.#recordedBy.set(table, child);
    }
    return child;
  }

  get mode(): AuditMode {
    return this.#o.mode;
  }

  /**
   * Records one event. BestEffort: undefined (buffered). Durable: resolves once the event is
   * synced to the spool. Throws AuditUnavailable at once when the spool is full and the policy
   * is Deny; a Durable promise rejects with it when the write fails.
   */
  record<T extends AuditTable>(table: T, row: AuditRow<T>): Promise<void> | undefined {
    if (this.#closed) throw new AuditUnavailable('audit log closed');
    const rec = encodeRecord(table, row);
    if (
      this.#o.whenFull === 'Deny' &&
      this.#spool.bytes + this.#pendingBytes + rec.length + 1 > this.#o.maxBytes
    ) {
      this.#metrics.refused.inc();
      throw new AuditUnavailable('audit spool full');
    }
    this.#recorded(table).inc();
    this.#pending.push(rec);
    this.#pendingBytes += rec.length + 1;
    if (this.#o.mode === 'Durable') {
      const done = new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
      if (!this.#writing) this.#write();
      return done;
    }
    if (this.#pendingBytes >= 1 << 20) this.#write();
    else this.#timer ??= setTimeout(() => this.#write(), this.#o.flushIntervalMs);
    return undefined;
  }

  /** Writes what is buffered, then waits (up to timeoutMs) for the spool to reach PostgreSQL. */
  async flush(timeoutMs: number): Promise<boolean> {
    await this.#settle();
    return this.#shipper.drained(timeoutMs);
  }

  /**
   * Graceful shutdown: nothing more is accepted, everything buffered goes to the spool, and the
   * shipper gets `timeoutMs` to empty it; what is left stays on disk for the next start.
   */
  async close(timeoutMs: number): Promise<{ drained: boolean; leftBytes: number }> {
    this.#closed = true;
    await this.#settle();
    const drained = await this.#shipper.drained(timeoutMs);
    await this.#shipper.stop();
    const leftBytes = this.#spool.bytes;
    this.#spool.close();
    return { drained, leftBytes };
  }

  async #settle(): Promise<void> {
    while (this.#writing || this.#pending.length > 0) {
      if (!this.#writing) this.#write();
      await this.#writing;
    }
  }

  /** Appends the buffered group; another group may start once this one is written. */
  #write(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#writing || this.#pending.length === 0) return;
    const records = this.#pending;
    const waiters = this.#waiters;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#waiters = [];
    this.#writing = this.#append(records)
      .then(
        () => {
          for (const w of waiters) w.resolve();
        },
        (e: Error) => {
          for (const w of waiters) w.reject(e);
        },
      )
      .finally(() => {
        this.#writing = undefined;
        this.#metrics.spoolBytes.set(this.#spool.bytes);
        this.#shipper.kick();
        if (this.#pending.length > 0) {
          if (this.#o.mode === 'Durable' || this.#pendingBytes >= 1 << 20) this.#write();
          else this.#timer ??= setTimeout(() => this.#write(), this.#o.flushIntervalMs);
        }
      });
  }

  async #append(records: string[]): Promise<void> {
    const sync = this.#o.mode === 'Durable';
    for (;;) {
      try {
        await this.#spool.append(records, sync);
        return;
      } catch (e) {
        if (!(e instanceof SpoolFull)) {
          this.#o.log.error(
            { err: (e as Error).message, records: records.length },
            'audit: spool write failed',
          );
          this.#metrics.dropped.inc({ reason: 'spool_write' }, records.length);
          throw new AuditUnavailable(`audit spool write failed: ${(e as Error).message}`);
        }
        const lost = this.#o.whenFull === 'DropOldest' ? this.#spool.dropOldest() : undefined;
        if (lost !== undefined) {
          this.#metrics.dropped.inc({ reason: 'spool_full' }, lost);
          this.#o.log.error(
            { dropped: lost, maxBytes: this.#o.maxBytes },
            'audit: spool full, dropped its oldest events (spoolFull: DropOldest)',
          );
          continue;
        }
        // Deny refuses at record(); a group that still does not fit (it grew meanwhile, or is
        // larger than a segment can free) is lost, counted and logged.
        this.#metrics.dropped.inc({ reason: 'spool_full' }, records.length);
        this.#o.log.error({ dropped: records.length }, 'audit: spool full, events dropped');
        throw new AuditUnavailable('audit spool full');
      }
    }
  }
}
