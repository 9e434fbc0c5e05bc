import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../common/db/migrate.js';
import { createLogger } from '../../common/logger.js';
import { ProfileSync } from '../../sidecar/identity/profileSync.js';
import type { Identity } from '../../sidecar/request/identity.js';
import { type PgNode, startPostgres } from '../harness/postgres.js';

// Users in PostgreSQL: created on first sight, updated later, and linked across providers
// by verified email only where both providers allow it.
const log = createLogger('test', { level: 'silent' });
const person = (
  provider: string,
  sub: string,
  email: string,
  verified = true,
  extra: Partial<Identity> = {},
): Identity => ({
  subject: `${provider}:${sub}`,
  provider,
  method: 'jwt',
  email,
  emailVerified: verified,
  groups: [],
  roles: [],
  scopes: [],
  claims: { name: `Name of ${sub}` },
  ...extra,
});

describe('ProfileSync on real PostgreSQL', () => {
  let node: PgNode;
  let pool: pg.Pool;
  let sync: ProfileSync;
  const linking = new Set(['ns/google', 'ns/corp']);
  const rows = async () =>
    (
      await pool.query(
        `SELECT u.provider, u.subject, u.email, u.name, u.groups, l.provider AS linked_to FROM users u
         LEFT JOIN users l ON l.id = u.linked_user_id ORDER BY u.created_at, u.provider`,
      )
    ).rows;

  beforeAll(async () => {
    node = await startPostgres();
    pool = new pg.Pool({ connectionString: node.connectionString, max: 2 });
    pool.on('error', () => undefined);
    await migrate(pool, log);
    sync = new ProfileSync(pool, log, new Registry(), () => [...linking], 0, 60_000);
  });
  afterAll(async () => {
    await sync?.close();
    await pool?.end();
    await node?.stop();
  });

  it('creates a user on first sight and updates it later', async () => {
    sync.seen(person('google', 'g1', 'ann@example.com'), { providerKey: 'ns/google', linkByEmail: true });
    await sync.flush();
    sync.seen(person('google', 'g1', 'ann@example.com', true, { groups: ['staff'] }), {
      providerKey: 'ns/google',
      linkByEmail: true,
    });
    await sync.flush();
    expect(await rows()).toEqual([
      {
        provider: 'ns/google',
        subject: 'g1',
        email: 'ann@example.com',
        name: 'Name of g1',
        groups: ['staff'],
        linked_to: null,
      },
    ]);
  });

  it('links the same verified email across providers only when both allow it, never silently', async () => {
    sync.seen(person('corp', 'c1', 'ANN@example.com'), { providerKey: 'ns/corp', linkByEmail: true });
    sync.seen(person('github', 'h1', 'ann@example.com'), { providerKey: 'ns/github', linkByEmail: false });
    sync.seen(person('other', 'o1', 'ann@example.com', false), {
      providerKey: 'ns/other',
      linkByEmail: true,
    });
    await sync.flush();
    const byProvider = Object.fromEntries((await rows()).map((r) => [r.provider, r.linked_to]));
    expect(byProvider).toEqual({
      'ns/google': null,
      'ns/corp': 'ns/google',
      'ns/github': null,
      'ns/other': null,
    });
  });
});
