import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitUntil } from '../harness/process.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { type RedisCluster, startRedisCluster } from '../harness/redisCluster.js';

describe('single Redis', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedis({ password: 'test-secret' });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('sets and gets, and requires the password', async () => {
    const c = new Redis(server.url);
    try {
      expect(await c.set('greeting', 'hello')).toBe('OK');
      expect(await c.get('greeting')).toBe('hello');
    } finally {
      await c.quit();
    }
    const anon = new Redis({
      host: server.host,
      port: server.port,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
    });
    anon.on('error', () => {}); // the NOAUTH below is expected; keep ioredis from logging it
    try {
      await expect(anon.get('greeting')).rejects.toThrow(/NOAUTH/);
    } finally {
      anon.disconnect();
    }
  });

  it('keeps AOF data across a restart', async () => {
    const before = new Redis(server.url);
    const pipe = before.pipeline();
    for (let i = 0; i < 100; i++) pipe.set(`aof:${i}`, `v${i}`);
    pipe.hset('aof:hash', { a: '1', b: '2' });
    await pipe.exec();
    await before.quit();

    await server.restart();

    const after = new Redis(server.url);
    try {
      expect(await after.dbsize()).toBeGreaterThanOrEqual(101);
      expect(await after.mget('aof:0', 'aof:57', 'aof:99')).toEqual(['v0', 'v57', 'v99']);
      expect(await after.hgetall('aof:hash')).toEqual({ a: '1', b: '2' });
      // The data came back from the AOF (no RDB snapshots are configured).
      expect(await after.config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);
      expect(await after.config('GET', 'save')).toEqual(['save', '']);
    } finally {
      await after.quit();
    }
  });
});

describe('Redis Cluster', () => {
  let cluster: RedisCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('has 3 masters covering all slots, each with one replica', async () => {
    const topo = await cluster.topology();
    const masters = await cluster.masters();
    expect(masters).toHaveLength(3);
    const covered = masters.flatMap((m) => m.slots).reduce((n, [lo, hi]) => n + hi - lo + 1, 0);
    expect(covered).toBe(16384);
    for (const m of masters) expect(topo.filter((n) => n.masterId === m.id)).toHaveLength(1);
    expect(cluster.nodes.map((n) => n.role)).toEqual([
      'master',
      'master',
      'master',
      'replica',
      'replica',
      'replica',
    ]);
  });

  it('stores keys on every master, as CLUSTER SLOTS says', async () => {
    const masters = await cluster.masters();
    const first = new Redis({ host: '127.0.0.1', port: masters[0]!.port });
    // CLUSTER SLOTS: [[start, end, [ip, port, id], ...replicas], ...]
    const ranges = await first.cluster('SLOTS');
    const ownerPort = (slot: number) => ranges.find(([lo, hi]) => slot >= lo && slot <= hi)?.[2]?.[1];

    // One hash-tagged key per master: the slot comes from the tag, so try tags until each
    // master has one.
    const keyFor = new Map<number, { key: string; slot: number }>();
    for (let i = 0; keyFor.size < masters.length && i < 1000; i++) {
      const key = `{tenant-${i}}:quota`;
      const slot = Number(await first.cluster('KEYSLOT', key));
      const port = ownerPort(slot)!;
      if (!keyFor.has(port)) keyFor.set(port, { key, slot });
    }
    await first.quit();
    expect([...keyFor.keys()].sort()).toEqual(masters.map((m) => m.port).sort());

    const client = new Cluster(cluster.startupNodes);
    try {
      for (const [port, { key }] of keyFor) expect(await client.set(key, `on-${port}`)).toBe('OK');
    } finally {
      await client.quit();
    }

    const topo = await cluster.topology();
    for (const m of masters) {
      const { key, slot } = keyFor.get(m.port)!;
      expect(m.slots.some(([lo, hi]) => slot >= lo && slot <= hi)).toBe(true);
      expect((await cluster.masterForKey(key)).port).toBe(m.port);

      // A plain (non-cluster) connection straight to the owning master has the key...
      const direct = new Redis({ host: '127.0.0.1', port: m.port });
      try {
        expect(await direct.get(key)).toBe(`on-${m.port}`);
        // ...and another master's key is not here: this node redirects.
        const other = [...keyFor.entries()].find(([p]) => p !== m.port)![1].key;
        await expect(direct.get(other)).rejects.toThrow(/MOVED/);
      } finally {
        await direct.quit();
      }
      const replica = topo.find((n) => n.masterId === m.id)!;
      // The write reaches the master's replica too (asynchronously: poll, bounded).
      const r = new Redis({ host: '127.0.0.1', port: replica.port });
      try {
        await r.call('READONLY');
        await waitUntil(
          `${key} on replica ${replica.port}`,
          async () => (await r.get(key)) === `on-${m.port}`,
          5000,
        );
      } finally {
        await r.quit();
      }
    }
  });

  it('fails over when a master dies, and takes it back as a replica', async () => {
    const key = '{failover}:counter';
    const victim = await cluster.masterForKey(key);
    const client = new Cluster(cluster.startupNodes);
    try {
      // Written straight to the master so that WAIT (which waits for this connection's last
      // write) proves the replica has it before the crash.
      const direct = new Redis({ host: '127.0.0.1', port: victim.port });
      expect(await direct.incrby(key, 5)).toBe(5);
      expect(await direct.call('WAIT', '1', '5000')).toBe(1);
      await direct.quit();
      const replica = (await cluster.topology()).find((n) => n.masterId === victim.id)!;

      await cluster.killNode(victim.port);
      await cluster.waitHealthy();
      const promoted = await cluster.masterForKey(key);
      expect(promoted.port).toBe(replica.port);
      expect(await client.incrby(key, 1)).toBe(6);

      await cluster.restartNode(victim.port);
      await cluster.waitHealthy();
      const back = (await cluster.topology()).find((n) => n.port === victim.port)!;
      expect(back).toMatchObject({ role: 'replica', masterId: promoted.id });
    } finally {
      await client.quit();
    }
  });
});
