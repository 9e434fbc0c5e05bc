import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** The audit log's metrics (nox_audit_*), made once per registry. */
export interface AuditMetrics {
  readonly recorded: Counter<'table'>;
  readonly written: Counter<'table'>;
  readonly duplicates: Counter<'table'>;
  readonly replayed: Counter<'table'>;
  readonly dropped: Counter<'reason'>;
  readonly refused: Counter;
  readonly spoolBytes: Gauge;
  readonly spoolMaxBytes: Gauge;
  readonly flushSeconds: Histogram;
  readonly flushFailures: Counter;
  readonly lag: Gauge;
}

export function auditMetrics(registry: Registry): AuditMetrics {
  const registers = [registry];
  return {
    recorded: new Counter({
      name: 'nox_audit_events_recorded_total',
      help: 'Audit events accepted into the log (the spool), by table.',
      labelNames: ['table'],
      registers,
    }),
    written: new Counter({
      name: 'nox_audit_events_written_total',
      help: 'Audit events inserted into PostgreSQL, by table.',
      labelNames: ['table'],
      registers,
    }),
    duplicates: new Counter({
      name: 'nox_audit_events_duplicate_total',
      help: 'Audit events sent again that PostgreSQL already had (a replayed batch whose first commit landed), by table.',
      labelNames: ['table'],
      registers,
    }),
    replayed: new Counter({
      name: 'nox_audit_events_replayed_total',
      help: 'Audit events written from the spool after PostgreSQL had failed, by table.',
      labelNames: ['table'],
      registers,
    }),
    dropped: new Counter({
      name: 'nox_audit_events_dropped_total',
      help: 'Audit events lost, by reason: spool_full (policy DropOldest), torn (a record cut by a crash), corrupt (not a record), refused (PostgreSQL would not take its data), spool_write (the disk failed).',
      labelNames: ['reason'],
      registers,
    }),
    refused: new Counter({
      name: 'nox_audit_events_refused_total',
      help: 'Checks denied AUDIT_UNAVAILABLE because their event could not be recorded (spool full with policy Deny, or a spool write failed).',
      registers,
    }),
    spoolBytes: new Gauge({
      name: 'nox_audit_spool_bytes',
      help: 'Bytes in the audit spool not yet written to PostgreSQL.',
      registers,
    }),
    spoolMaxBytes: new Gauge({
      name: 'nox_audit_spool_max_bytes',
      help: 'The audit spool’s bound.',
      registers,
    }),
    flushSeconds: new Histogram({
      name: 'nox_audit_flush_seconds',
      help: 'Time to write one batch of audit events to PostgreSQL (COPY and insert, one transaction).',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    flushFailures: new Counter({
      name: 'nox_audit_flush_failures_total',
      help: 'Batches of audit events PostgreSQL did not take (they stay in the spool and are retried).',
      registers,
    }),
    lag: new Gauge({
      name: 'nox_audit_lag_seconds',
      help: 'Age of the oldest audit event not yet in PostgreSQL (0 when the spool is empty).',
      registers,
    }),
  };
}
