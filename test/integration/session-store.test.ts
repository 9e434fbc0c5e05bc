import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { RedisSessionStore } from '../../sidecar/login/redisSessionStore.js';
import {
  MemorySessionStore,
  newSessionId,
  type SessionRecord,
  type SessionStore,
  sessionHash,
} from '../../sidecar/login/sessionStore.js';
import { waitUntil } from '../harness/process.js';
import { type RedisCluster, startRedisCluster } from '../harness/redisCluster.js';

const log = createLogger('test', { level: 'silent' });

function record(subject: string, now = Date.now()): SessionRecord {
  return {
    v: 1,
    provider: 'default/corp',
    subject,
    claims: { sub: subject },
    scopes: ['openid'],
    tokens: 'sealed',
    hasRefreshToken: true,
    accessExpiresAt: now + 60_000,
    createdAt: now,
    expiresAt: now + 3_600_000,
  };
}

/** What every SessionStore must do, checked against each implementation. */
function contract(name: string, makePair: () => Promise<[SessionStore, SessionStore]>) {
  describe(`${name} session store`, () => {
    let a: SessionStore;
    let b: SessionStore;
    beforeAll(async () => {
      [a, b] = await makePair();
    });
    afterAll(async () => {
      await a?.close();
      if (b !== a) await b?.close();
    });

    it('creates, reads (from another sidecar), replaces keeping the TTL, and expires sessions', async () => {
      const h = sessionHash(newSessionId());
      await a.create(h, record('corp:alice'), 60_000);
      expect((await b.get(h))?.subject).toBe('corp:alice');
      expect(await b.replace(h, { ...record('corp:alice'), scopes: ['openid', 'email'] })).toBe(true);
      expect((await a.get(h))?.scopes).toEqual(['openid', 'email']);
      const short = sessionHash(newSessionId());
      await a.create(short, record('corp:bob'), 150);
      // Redis expires the key on its own clock: the signal is the session being gone.
      await waitUntil('the short session to expire', async () => (await b.get(short)) === undefined, 5000, {
        intervalMs: 20,
      });
      // A session that is gone is not brought back by a late refresh.
      expect(await b.replace(short, record('corp:bob'))).toBe(false);
    });

    it('counts active sessions across sidecars: created ones, not expired or revoked ones', async () => {
      const before = await b.active();
      const live = sessionHash(newSessionId());
      const brief = sessionHash(newSessionId());
      await a.create(live, record('corp:dan'), 60_000);
      await a.create(brief, record('corp:eve'), 100);
      expect(await b.active()).toBe(before + 2);
      await waitUntil('the brief session to expire', async () => (await b.get(brief)) === undefined, 5000, {
        intervalMs: 20,
      });
      expect(await b.active()).toBe(before + 1);
      await a.revoke(live);
      expect(await b.active()).toBe(before);
    });

    it('revokes a session on every sidecar and tells them all within 1 s', async () => {
      const h = sessionHash(newSessionId());
      await a.create(h, record('corp:carol'), 60_000);
      const heard = new Promise<number>((res) => {
        const started = Date.now();
        b.onRevoked((x) => {
          if (x === h) res(Date.now() - started);
        });
      });
      expect(await a.revoke(h)).toBe(true);
      expect(await heard).toBeLessThan(1000);
      expect(await b.get(h)).toBeUndefined();
    });

    it('gives a session lock to exactly one of many contenders, and only its holder releases it', async () => {
      const h = sessionHash(newSessionId());
      const tokens = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).tryLock(h, 5_000)),
      );
      const held = tokens.filter((t) => t !== undefined);
      expect(held).toHaveLength(1);
      await b.unlock(h, 'not-the-token');
      expect(await a.tryLock(h, 5_000)).toBeUndefined();
      await a.unlock(h, held[0]!);
      expect(await b.tryLock(h, 5_000)).toBeDefined();
    });

    it('sees a login state once: a replay is refused', async () => {
      const key = sessionHash(newSessionId());
      const uses = await Promise.all([
        a.firstUse(key, 60_000),
        b.firstUse(key, 60_000),
        a.firstUse(key, 60_000),
      ]);
      expect(uses.filter(Boolean)).toHaveLength(1);
    });
  });
}

contract('memory', async () => {
  const m = new MemorySessionStore();
  return [m, m];
});

describe('Redis Cluster', () => {
  let cluster: RedisCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  // Each store is one sidecar's: its own connections and subscription.
  const store = async () => {
    const s = new RedisSessionStore({ nodes: cluster.startupNodes, cluster: true, timeoutMs: 500, log });
    await s.ready();
    return s;
  };
  contract('redis-cluster', async () => [await store(), await store()]);

  it('keeps a session and its lock in one hash slot, keyed by the sha256 of the id', async () => {
    const s = await store();
    const id = newSessionId();
    const h = sessionHash(id);
    await s.create(h, record('corp:dave'), 60_000);
    const token = await s.tryLock(h, 5_000);
    const raw = new Cluster(cluster.startupNodes);
    try {
      expect(await raw.exists(`nox:s:{${h}}`)).toBe(1);
      expect(await raw.get(`nox:s:{${h}}:lock`)).toBe(token);
      // The id itself (the cookie value) is nowhere in Redis.
      expect(await raw.exists(`nox:s:{${id}}`)).toBe(0);
      expect(Number(await raw.pttl(`nox:s:{${h}}`))).toBeGreaterThan(59_000);
    } finally {
      raw.disconnect();
      await s.close();
    }
  });
});
