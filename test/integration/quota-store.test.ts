import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { MemoryQuotaStore } from '../../sidecar/quota/memoryStore.js';
import { RedisQuotaStore } from '../../sidecar/quota/redisStore.js';
import type { LimitCheck, QuotaStore } from '../../sidecar/quota/store.js';
import { waitUntil } from '../harness/process.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { type RedisCluster, startRedisCluster } from '../harness/redisCluster.js';

// One suite, three stores: the in-process store must behave exactly like the Redis ones.
const log = createLogger('test', { level: 'silent' });
let n = 0;
const tags = new Map<string, string>();
/** Keys of one subject share its hash tag, as the quota stage builds them. */
const key = (subject: string, limit: string) => {
  if (!tags.has(subject)) tags.set(subject, `${subject}-${++n}`);
  return `nox:q:{${tags.get(subject)}}:${limit}`;
};

/** `roundTrips`: the store's count of Redis round trips so far (the Redis stores). */
function conformance(name: string, make: () => Promise<QuotaStore>, roundTrips?: () => Promise<number>) {
  describe(`quota store: ${name}`, () => {
    let store: QuotaStore;
    beforeAll(async () => {
      tags.clear();
      store = await make();
    });
    afterAll(async () => {
      await store?.close();
    });
    const take = (limits: LimitCheck[], cost = 1, dry = false) => store.take(limits, cost, Date.now(), dry);

    it('admits exactly `requests` back to back, then says when to retry', async () => {
      const l = { key: key('a', 'h'), requests: 5, windowMs: 3_600_000 };
      const results = [];
      for (let i = 0; i < 7; i++) results.push(await take([l]));
      expect(results.map((r) => r.allowed)).toEqual([true, true, true, true, true, false, false]);
      expect(results.map((r) => r.limits[0]!.remaining).slice(0, 5)).toEqual([4, 3, 2, 1, 0]);
      const denied = results[5]!.limits[0]!;
      // One request frees up every window/requests = 12 min.
      expect(denied.retryAfterMs).toBeGreaterThan(715_000);
      expect(denied.retryAfterMs).toBeLessThanOrEqual(720_000);
      expect(denied.resetMs).toBeGreaterThan(3_590_000);
    });

    it('charges all limits or none', async () => {
      const burst = { key: key('b', 's'), requests: 10, windowMs: 1000 };
      const hourly = { key: key('b', 'h'), requests: 3, windowMs: 3_600_000 };
      for (let i = 0; i < 3; i++) expect((await take([burst, hourly])).allowed).toBe(true);
      const denied = await take([burst, hourly]);
      expect(denied.allowed).toBe(false);
      expect(denied.limits.map((l) => l.allowed)).toEqual([true, false]);
      // The burst limit was not charged by the denied request.
      expect((await take([burst], 1, true)).limits[0]!.remaining).toBe(6);
    });

    it('weighs requests by cost', async () => {
      const l = { key: key('c', 'h'), requests: 10, windowMs: 60_000 };
      expect((await take([l], 5)).allowed).toBe(true);
      expect((await take([l], 5)).allowed).toBe(true);
      expect((await take([l], 1)).allowed).toBe(false);
    });

    it('counts calendar windows up to their end', async () => {
      const resetAt = Date.now() + 60_000;
      const l = { key: key('d', 'month'), requests: 3, resetAt };
      for (let i = 0; i < 3; i++) expect((await take([l])).allowed).toBe(true);
      const denied = await take([l]);
      expect(denied.allowed).toBe(false);
      expect(denied.limits[0]!.retryAfterMs).toBeGreaterThan(55_000);
      expect(denied.limits[0]!.retryAfterMs).toBeLessThanOrEqual(60_000);
    });

    it('does not charge in dry run', async () => {
      const l = { key: key('e', 'h'), requests: 1, windowMs: 60_000 };
      expect((await take([l], 1, true)).allowed).toBe(true);
      expect((await take([l], 1, true)).allowed).toBe(true);
      expect((await take([l])).allowed).toBe(true);
      expect((await take([l], 1, true)).allowed).toBe(false);
    });

    it('observes the subject for risk in the same call: rates, distinct addresses, new agents and routes', async () => {
      const limit = { key: key('obs', 'h'), requests: 100, windowMs: 3_600_000 };
      const tag = tags.get('obs')!;
      const before = await roundTrips?.();
      const seen = [];
      for (let i = 0; i < 10; i++) {
        const r = await store.take([limit], 1, Date.now(), false, undefined, {
          tag,
          sourceIp: `10.0.0.${i % 3}`,
          userAgent: i < 5 ? 'agent-a' : 'agent-b',
          route: i % 2 ? 'GET /a' : 'GET /b',
        });
        expect(r.allowed).toBe(true);
        seen.push(r.features!);
      }
      if (roundTrips) expect((await roundTrips()) - before!).toBe(10);
      const last = seen.at(-1)!;
      // Ten requests within a minute; a minute boundary passed during the loop weighs the
      // ones before it a little less.
      expect(last.perMinute).toBeGreaterThanOrEqual(9);
      expect(last.perMinute).toBeLessThanOrEqual(10);
      expect(last.perHour).toBeGreaterThanOrEqual(9);
      expect(last.perHour).toBeLessThanOrEqual(10);
      expect(seen.map((f) => f.distinctIps)).toEqual([1, 2, 3, 3, 3, 3, 3, 3, 3, 3]);
      expect(seen.map((f) => f.newUserAgent)).toEqual([1, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
      expect(seen.map((f) => f.newRoute)).toEqual([1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    });

    it('observes a request that the quota denies, and a subject with no limits at all', async () => {
      const limit = { key: key('obs-denied', 'h'), requests: 1, windowMs: 3_600_000 };
      const tag = tags.get('obs-denied')!;
      const o = { tag, sourceIp: '', userAgent: '', route: '' };
      expect((await store.take([limit], 1, Date.now(), false, undefined, o)).allowed).toBe(true);
      const denied = await store.take([limit], 1, Date.now(), false, undefined, o);
      expect(denied.allowed).toBe(false);
      expect(denied.features?.perMinute).toBeGreaterThanOrEqual(1);
      // Nothing to count for empty fields: no address, nothing new.
      expect(denied.features).toMatchObject({ distinctIps: 0, newUserAgent: 0, newRoute: 0, failures: 0 });
      const alone = await store.take([], 0, Date.now(), false, undefined, {
        tag: `${tag}-alone`,
        sourceIp: '192.0.2.1',
        userAgent: 'x',
        route: 'GET /x',
      });
      expect(alone.allowed).toBe(true);
      expect(alone.features).toMatchObject({
        perMinute: 1,
        perHour: 1,
        distinctIps: 1,
        newUserAgent: 1,
        newRoute: 1,
      });
    });

    it("counts a subject's recorded failures, read back by its next observation", async () => {
      const tag = `fail-${++n}`;
      const o = { tag, sourceIp: '', userAgent: '', route: '' };
      const first = await store.take([], 0, Date.now(), false, undefined, o);
      expect(first.features?.failures).toBe(0);
      await store.recordFailures!(new Map([[tag, 3]]), Date.now());
      await store.recordFailures!(
        new Map([
          [tag, 2],
          [`other-${tag}`, 7],
        ]),
        Date.now(),
      );
      const after = await store.take([], 0, Date.now(), false, undefined, o);
      // Five within this quarter of an hour (a quarter boundary in between weighs the older ones less).
      expect(after.features?.failures).toBeGreaterThanOrEqual(4);
      expect(after.features?.failures).toBeLessThanOrEqual(5);
    });

    it('refills at requests/window', async () => {
      const l = { key: key('f', 's'), requests: 4, windowMs: 400 };
      for (let i = 0; i < 4; i++) expect((await take([l])).allowed).toBe(true);
      const denied = await take([l]);
      expect(denied.allowed).toBe(false);
      // One request back after a quarter of the window (the Redis stores use Redis's own clock,
      // so the signal is the store's answer: a dry run that would be admitted).
      const ms = await waitUntil('a refilled request', async () => (await take([l], 1, true)).allowed, 2000, {
        intervalMs: 5,
      });
      expect(ms).toBeLessThan(400);
      expect((await take([l])).allowed).toBe(true);
      expect((await take([l])).allowed).toBe(false);
    });
  });
}

let redis: RedisServer;
let cluster: RedisCluster;
beforeAll(async () => {
  [redis, cluster] = await Promise.all([
    startRedis(),
    startRedisCluster({ masters: 3, replicasPerMaster: 1 }),
  ]);
});
afterAll(async () => {
  await Promise.all([redis?.stop(), cluster?.stop()]);
});

conformance('memory', async () => new MemoryQuotaStore());
const roundTripsIn = (registry: Registry) => async () =>
  ((await registry.getSingleMetric('nox_quota_redis_round_trips_total')!.get()).values[0]?.value ??
    0) as number;
const redisRegistry = new Registry();
conformance(
  'redis',
  async () => {
    const s = new RedisQuotaStore({
      nodes: [{ host: '127.0.0.1', port: redis.port }],
      cluster: false,
      timeoutMs: 200,
      waitReplicas: 0,
      log,
      registry: redisRegistry,
    });
    await s.ready();
    return s;
  },
  roundTripsIn(redisRegistry),
);
const clusterRegistry = new Registry();
conformance(
  'redis-cluster',
  async () => {
    const s = new RedisQuotaStore({
      nodes: cluster.startupNodes,
      cluster: true,
      timeoutMs: 200,
      waitReplicas: 1,
      log,
      registry: clusterRegistry,
    });
    await s.ready();
    return s;
  },
  roundTripsIn(clusterRegistry),
);
