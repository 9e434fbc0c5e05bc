import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { subjectHash } from '../../sidecar/quota/subject.js';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { type RedisServer, startRedis, withProbe } from '../harness/redis.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { startUpstream, type Upstream } from '../harness/upstream.js';

// A subject over quota is answered from the sidecar's local deny cache until its Retry-After,
// without a Redis round trip. When an operator raises the limit, the new policy snapshot
// drops those denials: the next request is decided by the new limit, not by a 429 cached
// under the old one. Real Envoy, a real sidecar, a real Redis.
const policies = (hourly: number, daily: number) => `
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: open }
spec:
  rules:
    - { name: everyone, action: Allow }
---
apiVersion: nox.dev/v1alpha1
kind: QuotaPolicy
metadata: { name: rolling }
spec:
  match: { paths: [{ value: /rolling }] }
  subject: [{ type: SourceIP }]
  tiers: [{ name: free, limits: [{ name: hourly, requests: ${hourly}, window: 1h }] }]
---
apiVersion: nox.dev/v1alpha1
kind: QuotaPolicy
metadata: { name: calendar }
spec:
  match: { paths: [{ value: /calendar }] }
  subject: [{ type: SourceIP }]
  tiers: [{ name: free, limits: [{ name: daily, requests: ${daily}, calendar: Day }] }]
`;

describe('a raised limit takes effect at the next request', () => {
  let redis: RedisServer;
  let upstream: Upstream;
  let sidecar: Sidecar;
  let envoy: Envoy;
  let dir: string;

  beforeAll(async () => {
    [redis, upstream] = await Promise.all([startRedis(), startUpstream()]);
    dir = scratchDir('quota-raise');
    writeFileSync(join(dir, 'policies.yaml'), policies(3, 2));
    sidecar = await startSidecar({
      policyPath: dir,
      env: {
        NOX_QUOTA_STORE: 'redis',
        NOX_REDIS_NODES: `127.0.0.1:${redis.port}`,
        NOX_REDIS_WAIT_REPLICAS: '0',
        NOX_REDIS_TIMEOUT_MS: '1000',
        NOX_CHECK_DEADLINE_MS: '2000',
      },
    });
    envoy = await startEnvoy({
      authzPort: sidecar.grpcPort,
      upstreamPort: upstream.port,
      authzTimeoutMs: 3000,
    });
  });
  afterAll(async () => {
    await envoy?.stop();
    await sidecar?.stop();
    await upstream?.close();
    await redis?.stop();
  });

  const metrics = async () => (await fetch(`http://127.0.0.1:${sidecar.httpPort}/metrics`)).text();
  const localDenials = async () =>
    Number(/^nox_quota_local_deny_hits_total(?:\{[^}]*\})? (\d+)$/m.exec(await metrics())?.[1] ?? Number.NaN);
  const snapshotVersion = async () =>
    Number(/^nox_policy_snapshot_version(?:\{[^}]*\})? (\d+)$/m.exec(await metrics())?.[1] ?? Number.NaN);

  it('drops the cached denials when the policy changes', async () => {
    const get = (path: string) => fetch(`${envoy.url}${path}`);
    const statuses = async (path: string, n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push((await get(path)).status);
      return out;
    };
    expect(await statuses('/rolling', 4)).toEqual([200, 200, 200, 429]);
    expect(await statuses('/calendar', 3)).toEqual([200, 200, 429]);
    // The next denials come from the local cache: 3 an hour frees one every 20 minutes.
    const cachedBefore = await localDenials();
    const denied = await get('/rolling');
    expect(denied.status).toBe(429);
    expect(Number(denied.headers.get('retry-after'))).toBeGreaterThan(1000);
    expect(await localDenials()).toBe(cachedBefore + 1);

    const version = await snapshotVersion();
    writeFileSync(join(dir, 'policies.yaml'), policies(1_000_000, 5));
    await waitUntil(
      'the raised limits to be in force',
      async () => (await snapshotVersion()) > version,
      10_000,
      {
        intervalMs: 25,
      },
    );

    // Calendar counters count requests: 2 used of the new 5, so exactly 3 more today.
    expect(await statuses('/calendar', 4)).toEqual([200, 200, 200, 429]);
    const hash = subjectHash(['SourceIP=127.0.0.1']);
    const counters = await withProbe(redis.port, undefined, async (c) => {
      const keys = await c.keys(`nox:q:{${hash}}:*:daily:*`);
      return Promise.all(keys.map((k) => c.get(k)));
    });
    expect(counters).toEqual(['5']);
    // The rolling window keeps the share of the hour already used (all of it), refilled at the
    // new rate of one per 3.6 ms: the next request passes, not a cached 429 for 20 minutes.
    expect((await get('/rolling')).status).toBe(200);
  });
});
