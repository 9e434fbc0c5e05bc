import { appendFileSync, cpSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations, maintainAuditPartitions, migrate, migrationsDir } from '../../common/db/migrate.js';
import { createLogger } from '../../common/logger.js';
import { type PgNode, pgQuery, startPostgres } from '../harness/postgres.js';
import { scratchDir } from '../harness/process.js';

const log = createLogger('migrations-test', { level: 'silent' });
const all = loadMigrations().map((m) => m.id);

function poolFor(node: PgNode, database = node.database): pg.Pool {
  const pool = new pg.Pool({ host: node.host, port: node.port, user: node.user, database, max: 2 });
  pool.on('error', () => {});
  return pool;
}

/** A copy of the migrations directory a test may edit. */
function copyOfMigrations(): string {
  const dir = join(scratchDir('migrations'), 'migrations');
  cpSync(migrationsDir(), dir, { recursive: true });
  return dir;
}

/** The day partition's name of `table` for a UTC instant. */
function partitionOf(table: string, d: Date): string {
  return `${table}_p${d.toISOString().slice(0, 10).replaceAll('-', '')}`;
}

const AUDIT_TABLES = [
  'audit_admin_actions',
  'audit_decisions',
  'audit_security_events',
  'audit_session_events',
];

describe('schema migrations', () => {
  let node: PgNode;
  let pool: pg.Pool;
  const scratch: string[] = [];
  beforeAll(async () => {
    node = await startPostgres();
    pool = poolFor(node);
  });
  afterAll(async () => {
    await pool?.end();
    await node?.stop();
    for (const d of scratch) rmSync(d, { recursive: true, force: true });
  });

  it('applies every migration to a fresh database and records its checksum', async () => {
    const { applied } = await migrate(pool, log);
    expect(applied).toEqual(all);
    expect(all.length).toBeGreaterThanOrEqual(4);

    const recorded = await pgQuery<{ version: number; checksum: string }>(
      node,
      'SELECT version, checksum FROM schema_migrations ORDER BY version',
    );
    expect(recorded).toEqual(loadMigrations().map((m) => ({ version: m.version, checksum: m.checksum })));

    const tables = await pgQuery<{ table_name: string }>(
      node,
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    );
    expect(tables.map((t) => t.table_name)).toEqual(
      expect.arrayContaining([
        'users',
        'sessions',
        'oauth_tokens',
        ...AUDIT_TABLES,
        'audit_decisions_default',
        'audit_retention',
        'quota_usage_hourly',
        'quota_rollup_batches',
        'quota_overrides',
        'risk_events',
        'schema_migrations',
      ]),
    );
    expect(
      await pgQuery(
        node,
        `SELECT c.relname, p.partstrat, a.attname AS key
           FROM pg_partitioned_table p
           JOIN pg_class c ON c.oid = p.partrelid
           JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]`,
      ),
    ).toEqual(
      expect.arrayContaining(
        AUDIT_TABLES.map((relname) => ({ relname, partstrat: 'r', key: 'occurred_at' })),
      ),
    );
    const indexes = await pgQuery<{ indexname: string }>(
      node,
      "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_decisions' ORDER BY 1",
    );
    expect(indexes.map((i) => i.indexname)).toEqual([
      'audit_decisions_code_idx',
      'audit_decisions_host_idx',
      'audit_decisions_occurred_idx',
      'audit_decisions_pkey',
      'audit_decisions_risk_idx',
      'audit_decisions_subject_idx',
    ]);
    // A subject is unique per provider, not globally.
    await pgQuery(node, "INSERT INTO users (provider, subject) VALUES ('gh', '42'), ('google', '42')");
    await expect(
      pgQuery(node, "INSERT INTO users (provider, subject) VALUES ('gh', '42')"),
    ).rejects.toMatchObject({
      code: '23505',
    });
  });

  it('applies nothing when run again', async () => {
    expect(await migrate(pool, log)).toEqual({ applied: [] });
    const [row] = await pgQuery<{ n: number }>(node, 'SELECT count(*)::int AS n FROM schema_migrations');
    expect(row!.n).toBe(all.length);
  });

  it('applies each version exactly once when several processes migrate at the same time', async () => {
    await pgQuery(node, 'CREATE DATABASE race');
    const pools = [0, 1, 2].map(() => poolFor(node, 'race'));
    try {
      const results = await Promise.all(pools.map((p) => migrate(p, log)));
      // The lock serializes them: one applies everything, the others find it done.
      expect(results.flatMap((r) => r.applied).sort()).toEqual(all);
      expect(results.filter((r) => r.applied.length > 0)).toHaveLength(1);
      const { rows } = await pools[0]!.query('SELECT version FROM schema_migrations ORDER BY version');
      expect(rows.map((r) => r.version)).toEqual(loadMigrations().map((m) => m.version));
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  it('refuses to run when an applied migration file has changed, and changes nothing', async () => {
    const dir = copyOfMigrations();
    scratch.push(join(dir, '..'));
    appendFileSync(join(dir, '0003_quota.sql'), '\n-- an innocent-looking edit\n');
    writeFileSync(join(dir, '9000_probe.sql'), 'CREATE TABLE probe_after_refusal (x int);\n');

    await expect(migrate(pool, log, { dir })).rejects.toThrow(
      /migration 0003_quota was applied on .* with checksum [0-9a-f]{12}, but .*0003_quota\.sql now has checksum [0-9a-f]{12}: an applied migration must never change/,
    );
    expect(await pgQuery(node, "SELECT to_regclass('probe_after_refusal') AS t")).toEqual([{ t: null }]);
    // The lock was released: a correct run proceeds.
    expect(await migrate(pool, log)).toEqual({ applied: [] });
  });

  it('applies a migration added later, and only it', async () => {
    const dir = copyOfMigrations();
    scratch.push(join(dir, '..'));
    writeFileSync(join(dir, '9001_probe.sql'), 'CREATE TABLE probe_added_later (x int);\n');
    expect(await migrate(pool, log, { dir })).toEqual({ applied: ['9001_probe'] });
    expect(await pgQuery(node, "SELECT to_regclass('probe_added_later')::text AS t")).toEqual([
      { t: 'probe_added_later' },
    ]);
  });

  it('rolls back a failing migration entirely and does not record it', async () => {
    const dir = copyOfMigrations();
    scratch.push(join(dir, '..'));
    writeFileSync(join(dir, '9002_broken.sql'), 'CREATE TABLE probe_broken (x int);\nSELECT 1/0;\n');
    await expect(migrate(pool, log, { dir })).rejects.toThrow(
      /migration 9002_broken failed and was rolled back: division by zero/,
    );
    expect(await pgQuery(node, "SELECT to_regclass('probe_broken') AS t")).toEqual([{ t: null }]);
    expect(await pgQuery(node, 'SELECT version FROM schema_migrations WHERE version = 9002')).toEqual([]);
  });

  it('has day partitions of every audit table for today and the next three, and routes an insert to today', async () => {
    const now = Date.now();
    for (const table of AUDIT_TABLES) {
      const parts = await pgQuery<{ name: string }>(
        node,
        `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = '${table}'::regclass ORDER BY 1`,
      );
      const days = [0, 1, 2, 3].map((k) => partitionOf(table, new Date(now + k * 86_400_000)));
      expect(parts.map((p) => p.name)).toEqual(expect.arrayContaining([...days, `${table}_default`]));
    }
    const [row] = await pgQuery<{ part: string }>(
      node,
      `INSERT INTO audit_decisions (id, occurred_at, sidecar, decision, code, subject, method, host, path, source_ip)
       VALUES (gen_random_uuid(), now(), 'sidecar-0', 'deny', 'QUOTA_EXCEEDED', 'user-1', 'GET', 'api.example.com',
               '/v1/x', '203.0.113.7')
       RETURNING tableoid::regclass::text AS part`,
    );
    expect(row!.part).toBe(partitionOf('audit_decisions', new Date()));
  });

  it('keeps an event for a day without a partition in the default one, moves it when the partition is made, and drops days past retention', async () => {
    const client = new pg.Client({
      host: node.host,
      port: node.port,
      user: node.user,
      database: node.database,
    });
    await client.connect();
    try {
      // Day boundaries are UTC whatever the session's time zone.
      await client.query("SET TimeZone = 'Asia/Kolkata'");
      const insert = (at: string) =>
        client.query<{ part: string }>(
          `INSERT INTO audit_decisions (id, occurred_at, sidecar, decision, code)
           VALUES (gen_random_uuid(), $1, 'sidecar-0', 'allow', 'ok') RETURNING tableoid::regclass::text AS part`,
          [at],
        );
      expect((await insert('2100-01-10T23:59:59Z')).rows[0]!.part).toBe('audit_decisions_default');

      const made = await maintainAuditPartitions(client, 1, new Date('2100-01-10T12:00:00Z'));
      expect(made).toEqual(
        expect.arrayContaining(['+audit_decisions_p21000110', '+audit_decisions_p21000111']),
      );
      expect(made.filter((m) => m.startsWith('+'))).toHaveLength(2 * AUDIT_TABLES.length);
      const moved = await client.query(
        "SELECT tableoid::regclass::text AS part FROM audit_decisions WHERE occurred_at >= '2100-01-01Z'",
      );
      expect(moved.rows).toEqual([{ part: 'audit_decisions_p21000110' }]);
      expect((await insert('2100-01-11T00:00:00Z')).rows[0]!.part).toBe('audit_decisions_p21000111');
      expect((await insert('2100-01-11T23:59:59.999Z')).rows[0]!.part).toBe('audit_decisions_p21000111');
      expect((await insert('2100-01-12T00:00:00Z')).rows[0]!.part).toBe('audit_decisions_default');
      // The partition that was filled and then attached got the parent's indexes too.
      const { rows } = await client.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = 'audit_decisions_p21000110'",
      );
      expect(rows[0]!.n).toBe(6);

      // 30 days of decisions are kept (audit_retention): on 2100-02-10 the 10th of January is
      // wholly older than that and goes, with its rows; the 11th is still in.
      await client.query("DELETE FROM audit_decisions_default WHERE occurred_at >= '2100-01-01Z'");
      const later = await maintainAuditPartitions(client, 0, new Date('2100-02-10T00:00:00Z'));
      expect(later).toContain('-audit_decisions_p21000110');
      expect(later).not.toContain('-audit_decisions_p21000111');
      expect(await maintainAuditPartitions(client, 0, new Date('2100-02-10T00:00:00Z'))).toEqual([]);
      const left = await client.query(
        "SELECT count(*)::int AS n FROM audit_decisions WHERE occurred_at >= '2100-01-01Z' AND occurred_at < '2100-01-11Z'",
      );
      expect(left.rows[0]).toEqual({ n: 0 });
    } finally {
      await client.end();
    }
  });
});
