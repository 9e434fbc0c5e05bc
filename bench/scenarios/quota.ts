import { generateKeyPairSync } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startEnvoy } from '../../test/harness/envoy.js';
import { scratchDir } from '../../test/harness/process.js';
import { withProbe } from '../../test/harness/redis.js';
import { type RedisCluster, startRedisCluster } from '../../test/harness/redisCluster.js';
import { startSidecar } from '../../test/harness/sidecar.js';
import { startUpstream } from '../../test/harness/upstream.js';
import { cpuSeconds, ghz, hostCpuTicks, type LoadResult, peakRssMiB, wrk } from '../lib/measure.js';
import { settledScrape, sum } from '../lib/metrics.js';
import { benchProvider, mint, serveJwks, writeGhzData, wrkLua } from '../lib/tokens.js';
import type { Scenario } from './index.js';

/** Distinct signed-in callers, each with its own token, sent in turn. */
export const USERS = 10_000;

// The subject is the verified user (subject type User): every caller signs in with its own
// RS256 access token, which the warm-up puts in the sidecar's token cache, so a measured
// check is the full pipeline of a signed-in API call: cached JWT, access rules, the quota
// charge (GCRA script + WAIT in Redis). Limits are realistic ones most requests pass: with
// USERS subjects no one comes near 1000/s, so every check is a Redis round trip and the
// local deny cache stays cold.
export const policies = (issuer: string, jwksUri: string) => `${benchProvider(issuer, jwksUri)}---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: bench-allow }
spec:
  providers: [bench]
  rules:
    - { name: no-admin, action: Deny, when: { paths: [{ value: /admin }] } }
    - { name: signed-in, action: Allow, when: { authenticated: Authenticated } }
---
apiVersion: nox.dev/v1alpha1
kind: QuotaPolicy
metadata: { name: bench-quota }
spec:
  failureMode: Closed
  subject: [{ type: User }]
  tiers:
    - name: standard
      limits:
        - { name: per-second, requests: 1000, window: 1s }
        - { name: per-hour, requests: 1000000, window: 1h }
  defaultTier: standard
`;

/** CPU seconds (user + system) every cluster node has used so far, from INFO cpu. */
async function redisCpuSeconds(cluster: RedisCluster): Promise<number> {
  const infos = await Promise.all(
    cluster.startupNodes.map((n) => withProbe(n.port, undefined, (c) => c.info('cpu'))),
  );
  const field = (info: string, name: string) =>
    Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(info)?.[1] ?? 0);
  return infos.reduce((a, i) => a + field(i, 'used_cpu_user') + field(i, 'used_cpu_sys'), 0);
}

/**
 * Runs one load and adds to it what the sidecar's counters say happened meanwhile: Redis
 * round trips per check, decisions, deny-cache hits, store errors, and CPU use.
 */
export async function measured(
  load: () => Promise<LoadResult>,
  sidecar: { httpPort: number; pid: number },
  cluster: RedisCluster,
): Promise<LoadResult> {
  const before = await settledScrape(sidecar.httpPort);
  const cpu0 = cpuSeconds(sidecar.pid);
  const redis0 = await redisCpuSeconds(cluster);
  const host0 = hostCpuTicks();
  const t0 = performance.now();
  const result = await load();
  const wallS = (performance.now() - t0) / 1000;
  const cpu1 = cpuSeconds(sidecar.pid);
  const redis1 = await redisCpuSeconds(cluster);
  const host1 = hostCpuTicks();
  const after = await settledScrape(sidecar.httpPort);
  const d = (name: string, where?: Record<string, string>) =>
    sum(after, name, where) - sum(before, name, where);

  const checks = d('nox_checks_total');
  const roundTrips = d('nox_quota_redis_round_trips_total');
  const redisCalls = d('nox_quota_redis_seconds_count');
  const extra: Record<string, number> = {
    checks,
    allowed: d('nox_checks_total', { decision: 'allow' }),
    denied: d('nox_checks_total', { decision: 'deny' }),
  };
  // Denials by code, if any (quota_exceeded, quota_store_unavailable, deadline_exceeded, ...).
  const codes = new Set(after.filter((s) => s.name === 'nox_checks_total').map((s) => s.labels.code ?? ''));
  for (const code of codes) {
    const n = d('nox_checks_total', { decision: 'deny', code });
    if (n > 0) extra[`denied_${code}`] = n;
  }
  Object.assign(extra, {
    quotaDenied: d('nox_quota_checks_total', { result: 'denied' }),
    quotaStoreErrors: d('nox_quota_checks_total', { result: 'store_error' }),
    localDenyHits: d('nox_quota_local_deny_hits_total'),
    redisRoundTrips: roundTrips,
    redisRoundTripsPerCheck: checks > 0 ? roundTrips / checks : Number.NaN,
    redisErrors: d('nox_quota_redis_errors_total'),
    // Inside the sidecar: the whole check, and its Redis round trip (script + WAIT).
    checkMeanMs: checks > 0 ? (d('nox_check_duration_seconds_sum') / checks) * 1000 : Number.NaN,
    redisMeanMs: redisCalls > 0 ? (d('nox_quota_redis_seconds_sum') / redisCalls) * 1000 : Number.NaN,
    // Of one core: ~100 means the (single-threaded) sidecar is CPU-bound.
    sidecarCpuPct: Math.round(((cpu1 - cpu0) / wallS) * 100),
    // What a check costs the sidecar process (all its threads), microseconds.
    sidecarCpuUsPerCheck: checks > 0 ? Math.round(((cpu1 - cpu0) * 1e6) / checks) : Number.NaN,
    // All six nodes together, of one core (each node is single-threaded).
    redisCpuPct: Math.round(((redis1 - redis0) / wallS) * 100),
    // Of all cores: the sidecar, Redis, Envoy and the load tool share them.
    hostCpuBusyPct: Math.round(((host1.busy - host0.busy) / (host1.total - host0.total)) * 100),
  });
  // With a RiskModel: rows per inference, and a batch's time from start to scores shared by
  // its rows, microseconds (with the event loop's wait: see nox_risk_inference_seconds).
  const batches = d('nox_risk_batch_size_count');
  if (batches > 0) {
    extra.riskDecisions = d('nox_risk_decisions_total');
    extra.riskNotAllowed = extra.riskDecisions - d('nox_risk_decisions_total', { action: 'allow' });
    extra.riskFailures = d('nox_risk_failures_total');
    extra.riskBatchMean = Math.round((d('nox_risk_batch_size_sum') / batches) * 10) / 10;
    extra.riskBatchWallUsPerCheck =
      Math.round((d('nox_risk_inference_seconds_sum') / Math.max(1, d('nox_risk_batch_size_sum'))) * 1e7) /
      10;
  }
  // Store errors by kind (timeout, connection, not_replicated, ...), if any.
  const kinds = new Set(
    after.filter((s) => s.name === 'nox_quota_redis_errors_total').map((s) => s.labels.kind ?? ''),
  );
  for (const kind of kinds) {
    const n = d('nox_quota_redis_errors_total', { kind });
    if (n > 0) extra[`redisErrors_${kind}`] = n;
  }
  result.extra = extra;
  result.sidecarPeakRssMiB = peakRssMiB(sidecar.pid);
  return result;
}

/**
 * USERS signed-in callers and what the loads send: a JWKS server (stopped with `stops`), one
 * RS256 token each, the ghz and wrk request files, and the policies in `dir`.
 */
export async function signedInUsers(
  dir: string,
  stops: (() => Promise<void>)[],
): Promise<{ tokens: string[]; path: string; ghzFile: string; wrkFile: string; policyPath: string }> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const issuer = await serveJwks(publicKey);
  stops.push(() => issuer.close());
  const tokens = await mint(privateKey, issuer.issuer, 0, USERS);
  const path = '/api/items';
  const ghzFile = join(dir, 'ghz.bin');
  const wrkFile = join(dir, 'wrk.txt');
  writeGhzData(ghzFile, path, tokens);
  writeFileSync(wrkFile, `${tokens.join('\n')}\n`);
  const policyPath = join(dir, 'policy.yaml');
  writeFileSync(policyPath, policies(issuer.issuer, issuer.jwksUri));
  return { tokens, path, ghzFile, wrkFile, policyPath };
}

export type SignedInUsers = Awaited<ReturnType<typeof signedInUsers>>;

/**
 * A sidecar on `cluster` (with `env` besides) behind its own Envoy, checked to allow a
 * signed-in request, and its two loads: ghz straight at it, wrk through Envoy.
 */
export async function benchGateway(opts: {
  policyPath: string;
  cluster: RedisCluster;
  upstreamPort: number;
  users: SignedInUsers;
  concurrency: number;
  env?: NodeJS.ProcessEnv;
  /**
   * With NOX_BENCH_CPU_PROF set: a V8 CPU profile of the sidecar, written when it stops, into
   * that directory's subdirectory of this name (bench/README.md).
   */
  profileIn?: string;
  /** Before the probe: what must be so first (a model loaded). */
  ready?: (httpPort: number) => Promise<void>;
}) {
  const sidecar = await startSidecar({
    policyPath: opts.policyPath,
    env: {
      NOX_LOG_LEVEL: 'warn',
      NOX_QUOTA_STORE: 'redis-cluster',
      NOX_REDIS_NODES: opts.cluster.startupNodes.map((n) => `${n.host}:${n.port}`).join(','),
      // The default, spelled out: every admitted charge waits for one replica.
      NOX_REDIS_WAIT_REPLICAS: '1',
      ...opts.env,
    },
    ...(process.env.NOX_BENCH_CPU_PROF
      ? {
          nodeArgs: [
            '--cpu-prof',
            `--cpu-prof-dir=${join(process.env.NOX_BENCH_CPU_PROF, opts.profileIn ?? '')}`,
          ],
        }
      : {}),
  });
  let envoy: Awaited<ReturnType<typeof startEnvoy>> | undefined;
  try {
    envoy = await startEnvoy({ authzPort: sidecar.grpcPort, upstreamPort: opts.upstreamPort });
    await opts.ready?.(sidecar.httpPort);
    const { tokens, path, ghzFile, wrkFile } = opts.users;
    const url = `${envoy.url}${path}`;
    // Fail fast on a setup that would only measure denials.
    const probe = await fetch(url, { headers: { authorization: `Bearer ${tokens[0]}` } });
    if (probe.status !== 200)
      throw new Error(`a bench request was refused: ${probe.status} ${await probe.text()}`);
    const { concurrency } = opts;
    const started = envoy;
    return {
      sidecar,
      target: { httpPort: sidecar.httpPort, pid: sidecar.service.child.pid! },
      grpc: (durationS: number) => () =>
        ghz({ port: sidecar.grpcPort, binaryFile: ghzFile, env: { GOGC: '2000' }, concurrency, durationS }),
      http: (durationS: number) => () => wrk({ url, concurrency, durationS, lua: wrkLua(wrkFile) }),
      stop: async () => {
        await started.stop();
        await sidecar.stop();
      },
    };
  } catch (e) {
    await envoy?.stop();
    await sidecar.stop();
    throw e;
  }
}

/** The quota stage on a real 3-master + 3-replica Redis Cluster, many subjects, nearly all admitted. */
export const quota: Scenario = {
  name: 'quota',
  describe: `${USERS} signed-in users (cached RS256 JWTs, sent in turn), QuotaPolicy per user (1000/s and 1M/h each) on a 3+3 Redis Cluster`,
  async run({ durationS, concurrency }) {
    const dir = scratchDir('bench-quota');
    const stops: (() => Promise<void>)[] = [];
    const results: LoadResult[] = [];
    try {
      const users = await signedInUsers(dir, stops);
      const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
      stops.push(() => cluster.stop());
      const upstream = await startUpstream();
      stops.push(() => upstream.close());
      const gw = await benchGateway({
        policyPath: users.policyPath,
        cluster,
        upstreamPort: upstream.port,
        users,
        concurrency,
      });
      stops.push(() => gw.stop());
      // Warm-up: JIT, connection pools, the script cached on every master, every token cached.
      await gw.grpc(2)();
      results.push(await measured(gw.grpc(durationS), gw.target, cluster));
      await gw.http(2)();
      results.push(await measured(gw.http(durationS), gw.target, cluster));
    } finally {
      // Envoy first, the JWKS server last: the reverse of starting.
      for (const stop of stops.reverse()) await stop();
      rmSync(dir, { recursive: true, force: true });
    }
    return results;
  },
};
