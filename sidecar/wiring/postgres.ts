import { hostname } from 'node:os';
import type pg from 'pg';
import type { Registry } from 'prom-client';
import { requireCurrentSchema } from '../../common/db/migrate.js';
import type { Logger } from '../../common/logger.js';
import type { AuditLog, AuditMode, SpoolFullPolicy } from '../audit/auditLog.js';
import type { DecisionAudit } from '../audit/decisionAudit.js';
import type { OverrideStore } from '../quota/overrides.js';
import type { UsageRollup } from '../quota/usageRollup.js';
import type { Settings } from '../settings/settings.js';

/** The sidecar's one PostgreSQL pool and what reads and writes through it. */
export interface Database {
  readonly pool: pg.Pool;
  readonly overrides: OverrideStore;
  readonly usage: UsageRollup;
  /** Decisions' audit events (NOX_AUDIT), unless Off. */
  readonly audit?: DecisionAudit;
  /** Stops polling, flushes the last usage batch and the audit spool, ends the pool. */
  close(): Promise<void>;
}

/**
 * PostgreSQL is never on the hot path: overrides are polled into memory, usage is
 * batched. Without NOX_DATABASE_URL (standalone) there is neither, and pg is never loaded.
 */
export async function databaseFor(
  settings: Settings,
  log: Logger,
  registry: Registry,
): Promise<Database | undefined> {
  if (!settings.databaseUrl) {
    log.info('NOX_DATABASE_URL is not set: no quota overrides, no usage rollups');
    return undefined;
  }
  const [{ default: pgLib }, { OverrideStore }, { UsageRollup }] = await Promise.all([
    import('pg'),
    import('../quota/overrides.js'),
    import('../quota/usageRollup.js'),
  ]);
  const pool = new pgLib.Pool({
    connectionString: settings.databaseUrl,
    max: 4,
    connectionTimeoutMillis: 2000,
    query_timeout: 5000,
  });
  pool.on('error', (err) => log.warn({ err: err.message }, 'postgres connection error'));
  await requireCurrentSchema(pool, log, 'this sidecar');
  const overrides = new OverrideStore(pool, log, registry);
  const usage = new UsageRollup({ pool, registry, log });
  await overrides.start();
  overrides.listen(
    {
      connectionString: settings.databaseUrl,
      connectionTimeoutMillis: 2000,
      application_name: 'nox-authz-overrides',
    },
    (c) => new pgLib.Client(c),
  );
  let auditLog: AuditLog | undefined;
  let audit: DecisionAudit | undefined;
  if (settings.audit !== 'Off') {
    const [{ AuditLog }, { DecisionAudit }] = await Promise.all([
      import('../audit/auditLog.js'),
      import('../audit/decisionAudit.js'),
    ]);
    auditLog = new AuditLog({
      pool,
      registry,
      log,
      dir: settings.auditSpoolDir,
      mode: settings.audit as AuditMode,
      maxBytes: settings.auditSpoolMaxBytes,
      whenFull: settings.auditSpoolFull as SpoolFullPolicy,
      flushIntervalMs: settings.auditFlushMs,
    });
    log.info({ mode: settings.audit, spool: settings.auditSpoolDir }, 'audit log on');
    audit = new DecisionAudit(auditLog, settings.podName || hostname());
  }
  return {
    pool,
    overrides,
    usage,
    ...(audit ? { audit } : {}),
    async close() {
      overrides.stop();
      await usage.close().catch((e: unknown) => log.error({ err: String(e) }, 'last usage flush failed'));
      if (auditLog) {
        const { drained, leftBytes } = await auditLog.close(AUDIT_CLOSE_MS);
        if (drained) log.info('audit spool flushed to PostgreSQL');
        else log.warn({ leftBytes }, 'audit events left in the spool: the next start replays them');
      }
      await pool.end();
    },
  };
}

/** How long a graceful shutdown waits for the audit spool to reach PostgreSQL. */
const AUDIT_CLOSE_MS = 5000;
