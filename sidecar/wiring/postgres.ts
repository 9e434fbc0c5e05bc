import type pg from 'pg';
import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import type { OverrideStore } from '../quota/overrides.js';
import type { UsageRollup } from '../quota/usageRollup.js';
import type { Settings } from '../settings/settings.js';

/** The sidecar's one PostgreSQL pool and what reads and writes through it. */
export interface Database {
  readonly pool: pg.Pool;
  readonly overrides: OverrideStore;
  readonly usage: UsageRollup;
  /** Stops polling, flushes the last usage batch, ends the pool. */
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
  const overrides = new OverrideStore(pool, log, registry);
  const usage = new UsageRollup({ pool, registry, log });
  await overrides.start();
  return {
    pool,
    overrides,
    usage,
    async close() {
      overrides.stop();
      await usage.close().catch((e: unknown) => log.error({ err: String(e) }, 'last usage flush failed'));
      await pool.end();
    },
  };
}
