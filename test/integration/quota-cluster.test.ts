import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import type { RawResource } from '../../sidecar/config/source.js';
import { compileSnapshot } from '../../sidecar/policy/compile.js';
import { RedisQuotaStore } from '../../sidecar/quota/redisStore.js';
import type { LimitCheck } from '../../sidecar/quota/store.js';
import { QuotaStage } from '../../sidecar/stages/quota.js';
import { checkContext, checkInput } from '../harness/checks.js';
import { sleep, waitUntil } from '../harness/process.js';
import { type RedisCluster, startRedisCluster } from '../harness/redisCluster.js';

const log = createLogger('test', { level: 'silent' });

/** A store as one sidecar has it: its own connections, its own registry. */
// Timeouts are generous where the test is about exactness, not latency: on a loaded 2-core
// machine a burst of 600 concurrent scripts can take longer than a production timeout.
async function sidecarStore(cluster: RedisCluster, timeoutMs = 2000): Promise<RedisQuotaStore> {
  const s = new RedisQuotaStore({
    nodes: cluster.startupNodes,
    cluster: true,
    timeoutMs,
    waitReplicas: 1,
    log,
    registry: new Registry(),
  });
  await s.ready();
  return s;
}

describe('quotas on a real 3-master Redis Cluster, shared by 4 sidecars', () => {
  let cluster: RedisCluster;
  let stores: RedisQuotaStore[] = [];

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
    stores = await Promise.all([0, 1, 2, 3].map(() => sidecarStore(cluster)));
  });
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await cluster?.stop();
  });

  it('admits exactly the limit out of 4×150 concurrent checks for one subject', async () => {
    const limit: LimitCheck = {
      key: 'nox:q:{concurrent}:free:yearly',
      requests: 100,
      windowMs: 365 * 86_400_000,
    };
    const results = await Promise.all(
      stores.flatMap((s) => Array.from({ length: 150 }, () => s.take([limit], 1, Date.now(), false))),
    );
    expect(results.filter((r) => r.allowed)).toHaveLength(100);
  });

  it('never admits more than the limit when the subject’s master is killed mid-load', async () => {
    const subjectKey = 'nox:q:{failover}:free:hourly';
    // A year-long window: GCRA refills one request per window/limit, so over the seconds
    // this test runs the limit is effectively fixed and any excess is a real over-admission.
    const limit: LimitCheck = { key: subjectKey, requests: 1500, windowMs: 365 * 86_400_000 };
    const master = await cluster.masterForKey(subjectKey);
    let admitted = 0;
    let errors = 0;
    let stop = false;
    const worker = async (s: RedisQuotaStore) => {
      while (!stop) {
        try {
          if ((await s.take([limit], 1, Date.now(), false)).allowed) admitted++;
        } catch {
          errors++; // failureMode Closed: a failed check is a denial
          await sleep(5); // a client backing off
        }
      }
    };
    const workers = stores.flatMap((s) => Array.from({ length: 6 }, () => worker(s)));
    await waitUntil('700 admitted', () => admitted >= 700, 30_000, { intervalMs: 5 });
    await cluster.killNode(master.port);
    await cluster.waitHealthy(30_000);
    // Keep going until the store says the limit is reached (a dry run is refused).
    await waitUntil(
      'the limit to be reached after the failover',
      async () => !(await stores[0]!.take([limit], 1, Date.now(), true)).allowed,
      30_000,
      { intervalMs: 50 },
    );
    stop = true;
    await Promise.all(workers);
    expect(errors).toBeGreaterThan(0); // the kill was felt
    expect(admitted).toBeLessThanOrEqual(1500);
    // Only checks in flight at the moment of the kill may be charged without being admitted.
    expect(admitted).toBeGreaterThanOrEqual(1500 - 24);
    const after = await stores[0]!.take([limit], 1, Date.now(), false);
    expect(after.allowed).toBe(false);
    await cluster.restartNode(master.port);
    await cluster.waitHealthy(30_000);
  });
});

describe('failureMode while Redis is unreachable', () => {
  let cluster: RedisCluster;
  let store: RedisQuotaStore;
  const registry = new Registry();
  const policy = (name: string, failureMode: 'Open' | 'Closed'): RawResource =>
    ({
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'QuotaPolicy',
      metadata: { name, namespace: 'ns' },
      spec: { failureMode, match: { paths: [{ value: `/${name}` }] }, subject: [{ type: 'SourceIP' }] },
      origin: 'test',
    }) as RawResource;
  const snapshot = compileSnapshot(
    { resources: [policy('open', 'Open'), policy('closed', 'Closed')], problems: [] },
    undefined,
    1,
  );
  const input = (path: string) => checkInput({ path, sourceAddress: '10.0.0.7' });
  const ctx = () => checkContext({ snapshot });

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
    store = await sidecarStore(cluster, 50);
  });
  afterAll(async () => {
    await store?.close();
    await cluster?.stop();
  });

  it('Open allows and Closed denies, quickly (circuit breaker), and both recover when Redis is back', async () => {
    const stage = new QuotaStage(store, registry);
    expect((await stage.run(input('/open'), ctx())).kind).toBe('continue');
    expect((await stage.run(input('/closed'), ctx())).kind).toBe('continue');

    const ports = cluster.nodes.map((n) => n.port);
    await Promise.all(ports.map((p) => cluster.killNode(p)));
    const timings: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const open = await stage.run(input('/open'), ctx());
      const closed = await stage.run(input('/closed'), ctx());
      timings.push(performance.now() - t0);
      expect(open).toMatchObject({ kind: 'error', code: 'QUOTA_STORE_UNAVAILABLE', failOpen: true });
      expect(closed).toMatchObject({ kind: 'error', code: 'QUOTA_STORE_UNAVAILABLE', failOpen: false });
    }
    // Once the breaker is open, a dead Redis costs nothing like its timeout per request.
    expect(Math.min(...timings.slice(-10))).toBeLessThan(5);
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/nox_quota_store_failure_decisions_total\{failure_mode="open"\} [1-9]/);
    expect(metrics).toMatch(/nox_quota_store_failure_decisions_total\{failure_mode="closed"\} [1-9]/);

    await Promise.all(ports.map((p) => cluster.restartNode(p)));
    await cluster.waitHealthy(30_000);
    await waitUntil(
      'checks to pass again after Redis came back',
      async () => (await stage.run(input('/closed'), ctx())).kind === 'continue',
      15_000,
    );
  });
});
