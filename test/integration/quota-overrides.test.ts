import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../common/db/migrate.js';
import { createLogger } from '../../common/logger.js';
import type { RawResource } from '../../sidecar/config/source.js';
import { compileSnapshot } from '../../sidecar/policy/compile.js';
import { MemoryQuotaStore } from '../../sidecar/quota/memoryStore.js';
import { OverrideStore } from '../../sidecar/quota/overrides.js';
import { subjectHash } from '../../sidecar/quota/subject.js';
import { UsageRollup } from '../../sidecar/quota/usageRollup.js';
import type { Outcome } from '../../sidecar/request/outcome.js';
import { QuotaStage } from '../../sidecar/stages/quota.js';
import { checkContext, checkInput } from '../harness/checks.js';
import { type PgNode, startPostgres } from '../harness/postgres.js';

// Overrides set in PostgreSQL change a subject's quota on the next refresh, and usage is
// rolled up per (subject, policy, tier, hour) — both off the request path.
const log = createLogger('test', { level: 'silent' });
const policy = {
  apiVersion: 'nox.dev/v1alpha1',
  kind: 'QuotaPolicy',
  metadata: { name: 'api', namespace: 'shop' },
  spec: {
    subject: [{ type: 'User' }],
    tiers: [
      { name: 'free', limits: [{ name: 'hourly', requests: 2, window: '1h' }] },
      { name: 'pro', limits: [{ name: 'hourly', requests: 1000, window: '1h' }] },
    ],
  },
  origin: 'test',
} as unknown as RawResource;
const snapshot = compileSnapshot({ resources: [policy], problems: [] }, undefined, 1);
const input = () => checkInput({ path: '/x' });
const ctx = (user: string) =>
  checkContext({
    snapshot,
    identity: { subject: user, provider: 'op', method: 'jwt', groups: [], roles: [], scopes: [], claims: {} },
  });
const tierOf = (o: Outcome) => (o.kind === 'continue' ? o.upstreamHeaders?.['x-nox-tier'] : o.kind);

describe('quota overrides and usage rollups on real PostgreSQL', () => {
  let node: PgNode;
  let pool: pg.Pool;
  let overrides: OverrideStore;
  let usage: UsageRollup;
  let stage: QuotaStage;
  let registry: Registry;
  const check = (user: string) => stage.run(input(), ctx(user));

  beforeAll(async () => {
    node = await startPostgres();
    pool = new pg.Pool({ connectionString: node.connectionString, max: 2 });
    pool.on('error', () => undefined); // idle connections see the server stop at teardown
    await migrate(pool, log);
    registry = new Registry();
    overrides = new OverrideStore(pool, log, registry, 60_000);
    await overrides.start();
    usage = new UsageRollup({ pool, registry, log, intervalMs: 60_000 });
    stage = new QuotaStage(new MemoryQuotaStore(), registry, { overrides, usage });
  });
  afterAll(async () => {
    overrides?.stop();
    await usage?.close().catch(() => undefined);
    await pool?.end();
    await node?.stop();
  });

  it('moves a subject to another tier, or gives it its own limits, and ignores expired overrides', async () => {
    const hash = (u: string) => subjectHash([`User=${u}`]);
    expect(tierOf(await check('ann'))).toBe('free');
    await pool.query(
      `INSERT INTO quota_overrides (subject_hash, subject, policy, tier, created_by) VALUES ($1, 'ann', 'shop/api', 'pro', 'test'),
       ($2, 'cat', 'shop/api', 'pro', 'test')`,
      [hash('ann'), hash('cat')],
    );
    await pool.query(
      `INSERT INTO quota_overrides (subject_hash, subject, policy, limits, created_by)
       VALUES ($1, 'bob', 'shop/api', '[{"name":"tiny","requests":1,"window":"1h"}]', 'test')`,
      [hash('bob')],
    );
    await pool.query(
      `UPDATE quota_overrides SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 minute' WHERE subject = 'cat'`,
    );
    expect(await overrides.refresh()).toBe(2);
    expect(tierOf(await check('ann'))).toBe('pro');
    for (let i = 0; i < 5; i++) expect(tierOf(await check('ann'))).toBe('pro');
    // bob keeps his tier name but counts against the override's own limit.
    expect(tierOf(await check('bob'))).toBe('free');
    const second = await check('bob');
    expect(second.kind).toBe('deny');
    if (second.kind === 'deny') expect(second.deny.headers?.ratelimit).toMatch(/^"tiny";r=0/);
    expect(tierOf(await check('cat'))).toBe('free');
  });

  it('rolls usage up per subject, policy, tier and hour', async () => {
    for (let i = 0; i < 3; i++) await check('dan'); // free: 2 allowed, 1 denied
    await usage.flush();
    const { rows } = await pool.query(
      `SELECT tier, requests::int, denied::int, cost::int FROM quota_usage_hourly WHERE subject_hash = $1 AND policy = 'shop/api'`,
      [subjectHash(['User=dan'])],
    );
    expect(rows).toEqual([{ tier: 'free', requests: 3, denied: 1, cost: 2 }]);
  });

  it('refuses override rows that would lift the limit, and keeps those subjects on the policy’s tiers', async () => {
    // Each of these rows, applied, would count as no limit at all (or a limit nobody set).
    const bad: Record<string, unknown> = {
      negative: [{ name: 'hourly', requests: -1, window: '1h' }],
      zero: [{ name: 'hourly', requests: 0, window: '1h' }],
      fraction: [{ name: 'hourly', requests: 1.5, window: '1h' }],
      text: [{ name: 'hourly', requests: '1000', window: '1h' }],
      empty: [],
      'no-window': [{ name: 'hourly', requests: 1000 }],
      'both-windows': [{ requests: 1000, window: '1h', calendar: 'Day' }],
      'long-window': [{ requests: 1000, window: '400d' }],
      'bad-calendar': [{ requests: 1000, calendar: 'Hour' }],
      'extra-field': [{ requests: 1000, window: '1h', match: { paths: [{ value: '/cheap' }] } }],
      'same-name': [
        { name: 'a', requests: 1000, window: '1h' },
        { name: 'a', requests: 1000, window: '1d' },
      ],
      huge: [{ requests: 1e12, window: '1h' }],
    };
    for (const [who, limits] of Object.entries(bad)) {
      await pool.query(
        `INSERT INTO quota_overrides (subject_hash, subject, policy, limits, created_by) VALUES ($1, $2, 'shop/api', $3, 'test')`,
        [subjectHash([`User=${who}`]), who, JSON.stringify(limits)],
      );
    }
    await pool.query(
      `INSERT INTO quota_overrides (subject_hash, subject, policy, tier, created_by) VALUES ($1, 'eve', 'shop/api', 'Not A Tier!', 'test'),
       ($2, 'fay', 'shop/api', 'pro', 'test')`,
      [subjectHash(['User=eve']), subjectHash(['User=fay'])],
    );
    // The earlier test's two overrides, fay's, and none of the bad ones.
    expect(await overrides.refresh()).toBe(3);
    expect(await registry.getSingleMetricAsString('nox_quota_overrides_refused')).toMatch(/ 13$/m);
    for (const who of [...Object.keys(bad), 'eve']) {
      const outcomes = [await check(who), await check(who), await check(who)];
      // The free tier's 2 an hour, as if no override existed.
      expect(
        outcomes.map((o) => o.kind),
        who,
      ).toEqual(['continue', 'continue', 'deny']);
      expect(tierOf(outcomes[0]!), who).toBe('free');
    }
    expect(tierOf(await check('fay'))).toBe('pro');
    // Fixed in the database, a row applies on the next load.
    await pool.query(
      `UPDATE quota_overrides SET limits = '[{"name":"hourly","requests":1000,"window":"1h"}]' WHERE subject = 'negative'`,
    );
    expect(await overrides.refresh()).toBe(4);
    expect(await registry.getSingleMetricAsString('nox_quota_overrides_refused')).toMatch(/ 12$/m);
    expect((await check('negative')).kind).toBe('continue');
  });
});
