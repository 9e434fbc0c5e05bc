import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { Logger } from '../logger.js';

/**
 * The shared PostgreSQL schema: numbered SQL files, each applied
 * once, in its own transaction, under an advisory lock so that several operator replicas
 * starting together serialize. An applied migration is identified by its version and the
 * checksum of its text; a changed file is an error, never a silent re-run.
 */

export interface Migration {
  readonly version: number;
  /** `0001_users_sessions`: the file name without `.sql`. */
  readonly id: string;
  readonly name: string;
  readonly sql: string;
  /** SHA-256 (hex) of the file with line endings normalized to \n. */
  readonly checksum: string;
}

/** A pool (a connection is taken for the duration) or one connected client. */
export type Db = pg.Pool | pg.ClientBase;

export interface MigrateOptions {
  /** Where the NNNN_name.sql files are; default: see migrationsDir(). */
  dir?: string;
}

/** pg_advisory_lock(classid, objid): 0x4e4f58 is "NOX"; objid 1 = migrations (2 = audit partitions). */
const LOCK: [number, number] = [0x4e4f58, 1];
const FILE = /^(\d{4})_([a-z0-9_]+)\.sql$/;

/**
 * The SQL files are read at run time rather than embedded: they stay plain .sql (reviewable,
 * runnable with psql) and the checksum is that of the file in review. They are looked for
 * next to this module (the source tree, or dist/ where scripts/copy-assets.mjs puts them),
 * else under the checkout's root: the first directory above with a Makefile, never in dist/.
 */
export function migrationsDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const beside = join(here, 'migrations');
  if (existsSync(beside)) return beside;
  for (let dir = here; ; dir = dirname(dir)) {
    if (!dir.split(sep).includes('dist') && existsSync(join(dir, 'Makefile'))) {
      return join(dir, 'common', 'db', 'migrations');
    }
    if (dirname(dir) === dir)
      throw new Error(`no migrations directory beside ${here} nor a Makefile above it`);
  }
}

export function loadMigrations(dir = migrationsDir()): Migration[] {
  const migrations: Migration[] = [];
  for (const file of readdirSync(dir).sort()) {
    if (!file.endsWith('.sql')) continue;
    const m = FILE.exec(file);
    if (!m) throw new Error(`${join(dir, file)}: a migration file is named NNNN_lower_snake.sql`);
    const version = Number(m[1]);
    const dup = migrations.find((x) => x.version === version);
    if (dup) throw new Error(`${dir}: ${dup.id}.sql and ${file} have the same version ${version}`);
    const sql = readFileSync(join(dir, file), 'utf8').replace(/\r\n/g, '\n');
    const checksum = createHash('sha256').update(sql).digest('hex');
    migrations.push({ version, id: file.slice(0, -4), name: m[2]!, sql, checksum });
  }
  if (migrations.length === 0) throw new Error(`${dir}: no migrations`);
  return migrations;
}

interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
  applied_at: Date;
}

/** Applies every migration not yet applied, in version order; returns the ids it applied. */
export async function migrate(
  db: Db,
  log: Logger,
  opts: MigrateOptions = {},
): Promise<{ applied: string[] }> {
  const dir = opts.dir ?? migrationsDir();
  const migrations = loadMigrations(dir);
  const client = db instanceof pg.Pool ? await db.connect() : db;
  let broken: Error | undefined;
  try {
    const waited = performance.now();
    // Session-level lock: it must outlive the per-migration transactions.
    await client.query('SELECT pg_advisory_lock($1, $2)', LOCK);
    const lockMs = performance.now() - waited;
    try {
      return { applied: await applyPending(client, migrations, dir, log, lockMs) };
    } finally {
      await client.query('SELECT pg_advisory_unlock($1, $2)', LOCK).catch((e: Error) => {
        broken = e;
      });
    }
  } finally {
    // A pooled connection whose unlock failed may still hold the lock: destroy it, never reuse it.
    if (client !== db) (client as pg.PoolClient).release(broken);
  }
}

async function applyPending(
  client: pg.ClientBase,
  migrations: Migration[],
  dir: string,
  log: Logger,
  lockMs: number,
): Promise<string[]> {
  await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
  )`);
  const { rows } = await client.query<AppliedRow>(
    'SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version',
  );
  const applied = new Map(rows.map((r) => [r.version, r]));
  // Every check before any change: a refused run leaves the schema as it found it.
  for (const m of migrations) {
    const row = applied.get(m.version);
    if (row && row.checksum !== m.checksum) {
      throw new Error(
        `migration ${m.id} was applied on ${row.applied_at.toISOString()} with checksum ${row.checksum.slice(0, 12)}, ` +
          `but ${join(dir, `${m.id}.sql`)} now has checksum ${m.checksum.slice(0, 12)}: an applied migration ` +
          'must never change; restore the file and put the change in a new migration',
      );
    }
  }
  const unknown = rows.filter((r) => !migrations.some((m) => m.version === r.version));
  if (unknown.length > 0) {
    // Expected during a rolling upgrade: a newer operator has already migrated further.
    log.warn(
      { versions: unknown.map((r) => r.version) },
      'the database has migrations this program does not know; a newer version applied them',
    );
  }

  const done: string[] = [];
  for (const m of migrations) {
    if (applied.has(m.version)) continue;
    const started = performance.now();
    await client.query('BEGIN');
    try {
      await client.query(m.sql);
      await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [
        m.version,
        m.name,
        m.checksum,
      ]);
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {});
      throw new Error(`migration ${m.id} failed and was rolled back: ${(e as Error).message}`, { cause: e });
    }
    done.push(m.id);
    log.info({ migration: m.id, ms: Math.round(performance.now() - started) }, 'applied migration');
  }
  log.info(
    { applied: done.length, version: migrations.at(-1)!.version, lockWaitMs: Math.round(lockMs) },
    'schema is up to date',
  );
  return done;
}

/**
 * The audit tables' day partitions (0006_audit_log.sql): creates those from `at`'s day through
 * `daysAhead` days after it and drops those wholly older than each table's retention
 * (audit_retention). Returns '+name' per partition created and '-name' per one dropped.
 * Meant to be called periodically (the operator does, with the schema): a day without a
 * partition is not an outage, its events wait in the default partition and are moved later.
 */
export async function maintainAuditPartitions(db: Db, daysAhead = 3, at = new Date()): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>('SELECT nox_audit_maintain($1, $2) AS name', [
    daysAhead,
    at,
  ]);
  return rows.map((r) => r.name);
}

/**
 * A program that reads or writes Nox's tables refuses to start against a schema older than
 * the one it was built with (its newest migration): every write would fail on a missing table
 * or column. PostgreSQL unreachable at start is not that, and is only logged (the sidecar's
 * events wait in its spool; the check is made again at the next start).
 */
export async function requireCurrentSchema(db: Db, log: Logger, who: string): Promise<void> {
  const wanted = loadMigrations().at(-1)?.version ?? 0;
  let have: number;
  try {
    const r = await db.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations');
    have = r.rows[0]?.v ?? 0;
  } catch (e) {
    if ((e as { code?: string }).code !== '42P01') {
      log.warn(
        { err: (e as Error).message },
        'PostgreSQL not reachable at start: the schema version is not checked',
      );
      return;
    }
    have = 0; // no schema_migrations: never migrated
  }
  if (have < wanted)
    throw new Error(
      `the database schema is at version ${have}, ${who} needs ${wanted}: let the operator (or the chart's migration job) migrate it first`,
    );
}
