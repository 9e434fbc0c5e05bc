import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../common/db/migrate.js';
import { createLogger } from '../../common/logger.js';
import { UsageRollup, type UsageRollupOptions } from '../../sidecar/quota/usageRollup.js';
import { type PgNode, pgQuery, startPostgres } from '../harness/postgres.js';
import { waitUntil } from '../harness/process.js';

const log = createLogger('usage-rollup-test', { level: 'silent' });
const HOUR = 3_600_000;
const H0 = Date.UTC(2030, 0, 1, 10);

interface UsageRow {
  subject_hash: string;
  hour: string;
  requests: number;
  denied: number;
  cost: number;
}

async function metric(registry: Registry, name: string): Promise<number> {
  // A histogram's values are its buckets, sum and count: count it by its _count.
  const { values } = await registry.getSingleMetric(name)!.get();
  const named = (v: object) => (v as { metricName?: string }).metricName;
  return values
    .filter((v) => named(v) === undefined || named(v) === name || named(v) === `${name}_count`)
    .reduce((sum, v) => sum + v.value, 0);
}

describe('quota usage rollup', () => {
  let node: PgNode;
  const pools: pg.Pool[] = [];
  const rollups: UsageRollup[] = [];

  function pool(extra: pg.PoolConfig = {}): pg.Pool {
    const p = new pg.Pool({
      connectionString: node.connectionString,
      connectionTimeoutMillis: 2000,
      max: 2,
      ...extra,
    });
    // The pool's owner handles idle connections dying, as in any program: PostgreSQL is killed below.
    p.on('error', () => {});
    pools.push(p);
    return p;
  }

  function rollup(opts: Partial<UsageRollupOptions> = {}): { r: UsageRollup; registry: Registry } {
    const registry = new Registry();
    const r = new UsageRollup({ pool: pool(), registry, log, intervalMs: 3_600_000, ...opts });
    rollups.push(r);
    return { r, registry };
  }

  /** Per subject and hour: `allowed` requests costing `cost` each, and `denied` denied ones. */
  function recordMany(r: UsageRollup, policy: string, subjects: string[], allowed: number, denied: number) {
    for (const subjectHash of subjects) {
      for (const hour of [H0, H0 + HOUR]) {
        for (let i = 0; i < allowed + denied; i++) {
          const at = hour + ((i * 7919) % HOUR); // spread over the hour, never across it
          r.record({ subjectHash, policy, tier: 'free', cost: 3, allowed: i < allowed, at });
        }
      }
    }
  }

  async function usage(policy: string): Promise<UsageRow[]> {
    return pgQuery<UsageRow>(
      node,
      `SELECT subject_hash, to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24') AS hour,
              requests::int, denied::int, cost::int
         FROM quota_usage_hourly WHERE policy = $1 ORDER BY subject_hash, hour`,
      [policy],
    );
  }

  const expected = (subjects: string[], requests: number, denied: number, cost: number): UsageRow[] =>
    subjects.flatMap((subject_hash) =>
      ['2030-01-01T10', '2030-01-01T11'].map((hour) => ({ subject_hash, hour, requests, denied, cost })),
    );

  beforeAll(async () => {
    node = await startPostgres();
    const p = new pg.Pool({ connectionString: node.connectionString });
    await migrate(p, log);
    await p.end();
  });
  afterEach(async () => {
    await Promise.all(rollups.splice(0).map((r) => r.close().catch(() => {})));
  });
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await node?.stop();
  });

  it('writes exact hourly sums per subject, and adds a later flush to them', async () => {
    const { r, registry } = rollup();
    const subjects = ['subj-a', 'subj-b'];
    recordMany(r, 'ns/sums', subjects, 5, 2);
    expect(r.pending).toBe(4);
    expect(await r.flush()).toEqual({ written: 4, pending: 0 });
    expect(await usage('ns/sums')).toEqual(expected(subjects, 7, 2, 15));

    recordMany(r, 'ns/sums', subjects, 5, 2);
    await r.flush();
    expect(await usage('ns/sums')).toEqual(expected(subjects, 14, 4, 30));
    expect(await metric(registry, 'nox_quota_rollups_written_total')).toBe(8);
    expect(await metric(registry, 'nox_quota_rollup_flush_seconds')).toBe(2);
    expect(await metric(registry, 'nox_quota_rollup_pending')).toBe(0);
  });

  it('writes in batches of at most batchSize rows', async () => {
    const { r } = rollup({ batchSize: 500 });
    const before = await pgQuery<{ n: number }>(node, 'SELECT count(*)::int AS n FROM quota_rollup_batches');
    for (let i = 0; i < 1234; i++)
      r.record({ subjectHash: `s${i}`, policy: 'ns/many', tier: 't', cost: 1, allowed: true, at: H0 });
    expect(await r.flush()).toEqual({ written: 1234, pending: 0 });
    const after = await pgQuery<{ n: number }>(node, 'SELECT count(*)::int AS n FROM quota_rollup_batches');
    expect(after[0]!.n - before[0]!.n).toBe(3);
    const [sum] = await pgQuery<{ rows: number; requests: number }>(
      node,
      "SELECT count(*)::int AS rows, sum(requests)::int AS requests FROM quota_usage_hourly WHERE policy = 'ns/many'",
    );
    expect(sum).toEqual({ rows: 1234, requests: 1234 });
  });

  it('keeps counts while PostgreSQL is down and writes them exactly once when it is back', async () => {
    const { r, registry } = rollup();
    const subjects = ['subj-c', 'subj-d'];
    recordMany(r, 'ns/outage', subjects, 3, 1);
    await r.flush();

    // kill(), not stop(): the harness's stop() also deletes the data directory.
    await node.kill();
    recordMany(r, 'ns/outage', subjects, 3, 1);
    await expect(r.flush()).rejects.toThrow();
    expect(await metric(registry, 'nox_quota_rollup_errors_total')).toBe(1);
    recordMany(r, 'ns/outage', subjects, 3, 1);
    await expect(r.flush()).rejects.toThrow();
    expect(await metric(registry, 'nox_quota_rollup_errors_total')).toBe(2);
    // The failed batch is kept apart from the counts recorded since.
    expect(await metric(registry, 'nox_quota_rollup_pending')).toBe(8);

    await node.restart();
    expect(await r.flush()).toEqual({ written: 8, pending: 0 });
    expect(await usage('ns/outage')).toEqual(expected(subjects, 12, 3, 27));
    await r.flush();
    expect(await usage('ns/outage')).toEqual(expected(subjects, 12, 3, 27));
  });

  it('does not count twice a batch that committed although its acknowledgement was lost', async () => {
    const registry = new Registry();
    // query_timeout gives up on the client side only: the server goes on and commits.
    const r = new UsageRollup({ pool: pool({ query_timeout: 300 }), registry, log, intervalMs: 3_600_000 });
    rollups.push(r);
    const event = { subjectHash: 'subj-e', policy: 'ns/ack', tier: 'free', cost: 1, allowed: true, at: H0 };
    r.record(event);
    await r.flush();

    const blocker = new pg.Client({ connectionString: node.connectionString });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query("SELECT 1 FROM quota_usage_hourly WHERE subject_hash = 'subj-e' FOR UPDATE");
      for (let i = 0; i < 4; i++) r.record(event);
      await expect(r.flush()).rejects.toThrow(/timeout/i);
      await blocker.query('COMMIT');
    } finally {
      await blocker.end();
    }
    await waitUntil(
      'the abandoned upsert to commit',
      async () => (await usage('ns/ack'))[0]?.requests === 5,
      10_000,
    );

    expect(await r.flush()).toEqual({ written: 1, pending: 0 });
    expect((await usage('ns/ack'))[0]).toMatchObject({ requests: 5, cost: 5 });
  });

  it('drops events beyond the pending cap, counts them, and keeps going', async () => {
    const { r, registry } = rollup({ maxPending: 3 });
    for (let i = 0; i < 5; i++)
      r.record({ subjectHash: `cap${i}`, policy: 'ns/cap', tier: 'free', cost: 1, allowed: true, at: H0 });
    r.record({ subjectHash: 'cap0', policy: 'ns/cap', tier: 'free', cost: 1, allowed: false, at: H0 });
    expect(await metric(registry, 'nox_quota_rollup_dropped_total')).toBe(2);
    expect(r.pending).toBe(3);
    await r.flush();
    expect(await usage('ns/cap')).toEqual([
      { subject_hash: 'cap0', hour: '2030-01-01T10', requests: 2, denied: 1, cost: 1 },
      { subject_hash: 'cap1', hour: '2030-01-01T10', requests: 1, denied: 0, cost: 1 },
      { subject_hash: 'cap2', hour: '2030-01-01T10', requests: 1, denied: 0, cost: 1 },
    ]);
  });

  it('flushes on its timer, and once more on close', async () => {
    const { r } = rollup({ intervalMs: 100 });
    r.record({ subjectHash: 'tick', policy: 'ns/timer', tier: 'free', cost: 1, allowed: true, at: H0 });
    await waitUntil('the timer to flush', async () => (await usage('ns/timer')).length === 1, 5_000);
    r.record({ subjectHash: 'tick', policy: 'ns/timer', tier: 'free', cost: 1, allowed: true, at: H0 });
    await r.close();
    expect((await usage('ns/timer'))[0]).toMatchObject({ requests: 2 });
  });
});
