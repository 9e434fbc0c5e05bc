import { createHash } from 'node:crypto';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../common/db/migrate.js';
import { createLogger } from '../../common/logger.js';
import { RedisRevocations } from '../../sidecar/identity/revocations.js';
import { httpCheck, SidecarClient } from '../harness/grpcClient.js';
import { type OidcIssuer, startOidcIssuer } from '../harness/oidc.js';
import { policyDir, signedInPolicy } from '../harness/policies.js';
import { type PgNode, startPostgres } from '../harness/postgres.js';
import { waitUntil } from '../harness/process.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';

// Two sidecars sharing one Redis and one PostgreSQL: a revocation reaches both within a
// second, and the users they see are written to the users table.
const log = createLogger('test', { level: 'silent' });

describe('revocation across sidecars, and profile sync', () => {
  let redis: RedisServer;
  let db: PgNode;
  let pool: pg.Pool;
  let op: OidcIssuer;
  let sidecars: Sidecar[] = [];
  let clients: SidecarClient[] = [];
  let admin: RedisRevocations;

  beforeAll(async () => {
    [redis, db, op] = await Promise.all([
      startRedis(),
      startPostgres(),
      startOidcIssuer([
        { clientId: 'app-a', secret: 'a' },
        { clientId: 'app-b', secret: 'b' },
      ]),
    ]);
    pool = new pg.Pool({ connectionString: db.connectionString, max: 2 });
    pool.on('error', () => undefined);
    await migrate(pool, log);
    const dir = policyDir('revocation', signedInPolicy(op.issuer, op.audience));
    const env = {
      NOX_QUOTA_STORE: 'redis',
      NOX_REDIS_NODES: `127.0.0.1:${redis.port}`,
      NOX_REDIS_WAIT_REPLICAS: '0',
      NOX_DATABASE_URL: db.connectionString,
      // What is measured is how fast a revocation spreads, not check latency: a first check
      // fetches JWKS, which on a busy machine can outlast the production deadline (150 ms).
      NOX_CHECK_DEADLINE_MS: '2000',
    };
    sidecars = await Promise.all([
      startSidecar({ policyPath: dir, env }),
      startSidecar({ policyPath: dir, env }),
    ]);
    clients = sidecars.map((s) => new SidecarClient(s.grpcPort));
    admin = new RedisRevocations(
      [{ host: '127.0.0.1', port: redis.port }],
      false,
      undefined,
      log,
      new Registry(),
    );
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all(sidecars.map((s) => s.stop()));
    await admin?.stop();
    await pool?.end();
    await Promise.all([op?.close(), redis?.stop(), db?.stop()]);
  });

  const status = async (c: SidecarClient, token: string) =>
    (await c.check(httpCheck('/api', { headers: { authorization: `Bearer ${token}` } }))).deniedResponse
      ?.status?.code ?? 200;
  /** Whether `f` comes true within `ms`. */
  const within = (ms: number, f: () => Promise<boolean>) =>
    waitUntil('the condition', f, ms, { intervalMs: 20 }).then(
      (took) => took <= ms,
      () => false,
    );

  it('a revoked token stops working on every sidecar within 1 s', async () => {
    const token = await op.token('app-a');
    for (const c of clients) expect(await status(c, token)).toBe(200);
    const hash = createHash('sha256').update(token).digest('base64url');
    await admin.revoke(`token:${hash}`, Date.now() + 3_600_000);
    for (const c of clients)
      expect(await within(1000, async () => (await status(c, token)) === 401)).toBe(true);
    // Another token of the same user still works: only that token was revoked.
    expect(await status(clients[0]!, await op.token('app-a'))).toBe(200);
  });

  it('revoking a subject shuts out all its tokens everywhere', async () => {
    const token = await op.token('app-b');
    expect(await status(clients[1]!, token)).toBe(200);
    await admin.revoke('subject:corp:app-b', Date.now() + 3_600_000);
    for (const c of clients)
      expect(await within(1000, async () => (await status(c, token)) === 401)).toBe(true);
  });

  it('writes the users it sees to PostgreSQL, once per subject', async () => {
    const found = await within(5000, async () => {
      const { rows } = await pool.query(`SELECT provider, subject FROM users ORDER BY subject`);
      return rows.length === 2;
    });
    expect(found).toBe(true);
    const { rows } = await pool.query(`SELECT provider, subject FROM users ORDER BY subject`);
    expect(rows).toEqual([
      { provider: 'default/corp', subject: 'app-a' },
      { provider: 'default/corp', subject: 'app-b' },
    ]);
  });
});
