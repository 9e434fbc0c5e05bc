import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startEnvoy } from '../../test/harness/envoy.js';
import { scratchDir } from '../../test/harness/process.js';
import { startSidecar } from '../../test/harness/sidecar.js';
import { startUpstream } from '../../test/harness/upstream.js';
import { cpuSeconds, ghz, hostCpuTicks, type LoadResult, peakRssMiB, wrk } from '../lib/measure.js';
import { settledScrape, sum } from '../lib/metrics.js';
import { benchProvider, type Issuer, mint, serveJwks, writeGhzData, wrkLua } from '../lib/tokens.js';
import type { Scenario } from './index.js';

/** Distinct tokens of the cached case: after the warm-up every one is in the sidecar's token cache. */
export const CACHED_TOKENS = 100;
/** Of each miss pool, the tokens its 1 s warm-up uses; the measured run starts after them. */
const WARM_TOKENS = 10_000;

// Bearer JWTs validated against a JWKS: the OAuth2Provider names its JWKS (endpoints.jwks),
// so there is no discovery; the policy admits any authenticated caller.
export const policies = (issuer: string, jwksUri: string) => `${benchProvider(issuer, jwksUri)}---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: bench-jwt }
spec:
  providers: [bench]
  rules: [{ name: signed-in, action: Allow, when: { authenticated: Authenticated } }]
`;

/**
 * CPU time (user + system) of this process's exited and reaped children, seconds: the
 * load tool, which is the only child that ends during a run (cutime + cstime, /proc/self/stat).
 */
function reapedChildrenCpuSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

const warned = new Set<string>();

/** One load, labelled with its case, and what the sidecar's counters say about it. */
async function measured(
  label: string,
  distinctTokens: number,
  load: () => Promise<LoadResult>,
  sidecar: { httpPort: number; pid: number },
  issuer: Issuer,
): Promise<LoadResult> {
  const before = await settledScrape(sidecar.httpPort);
  const cpu0 = cpuSeconds(sidecar.pid);
  const host0 = hostCpuTicks();
  const tool0 = reapedChildrenCpuSeconds();
  const t0 = performance.now();
  const result = await load();
  const wallS = (performance.now() - t0) / 1000;
  const cpu1 = cpuSeconds(sidecar.pid);
  const host1 = hostCpuTicks();
  const tool1 = reapedChildrenCpuSeconds();
  const after = await settledScrape(sidecar.httpPort);
  const d = (name: string, where?: Record<string, string>) =>
    sum(after, name, where) - sum(before, name, where);
  // A counter the sidecar does not export reads as NaN, not as a misleading 0.
  const exported = (name: string) => after.families?.has(name) ?? false;
  const counter = (name: string, where?: Record<string, string>) =>
    exported(name) ? d(name, where) : Number.NaN;
  const checks = d('nox_checks_total');
  const hits = counter('nox_identity_token_cache_total', { result: 'hit' });
  const misses = counter('nox_identity_token_cache_total', { result: 'miss' });
  const extra: Record<string, number> = {
    checks,
    allowed: d('nox_checks_total', { decision: 'allow' }),
    denied: d('nox_checks_total', { decision: 'deny' }),
  };
  for (const code of new Set(after.filter((s) => s.name === 'nox_checks_total').map((s) => s.labels.code))) {
    const n = d('nox_checks_total', { decision: 'deny', code: code ?? '' });
    if (n > 0) extra[`denied_${code}`] = n;
  }
  Object.assign(extra, {
    distinctTokens,
    tokenCacheHits: hits,
    tokenCacheMisses: misses,
    tokenCacheHitPct: hits + misses > 0 ? Math.round((hits / (hits + misses)) * 1000) / 10 : Number.NaN,
    // During this run, and in all since the sidecar started (the first is the only one expected).
    jwksFetches: counter('nox_identity_jwks_fetches_total'),
    jwksFetchesSinceStart: exported('nox_identity_jwks_fetches_total')
      ? sum(after, 'nox_identity_jwks_fetches_total')
      : Number.NaN,
    jwksServed: issuer.jwksHits(),
    checkMeanMs: checks > 0 ? (d('nox_check_duration_seconds_sum') / checks) * 1000 : Number.NaN,
    // Of one core: ~100 means the (single-threaded) sidecar is CPU-bound.
    sidecarCpuPct: Math.round(((cpu1 - cpu0) / wallS) * 100),
    // ghz or wrk, of one core: the load tool competes with the sidecar for the same cores.
    loadToolCpuPct: Math.round(((tool1 - tool0) / wallS) * 100),
    // Of all cores: the sidecar, Envoy, the upstream and the load tool share them.
    hostCpuBusyPct: Math.round(((host1.busy - host0.busy) / (host1.total - host0.total)) * 100),
  });
  if (label === 'miss') extra.tokensReused = Math.max(0, checks - distinctTokens);
  for (const name of ['nox_identity_token_cache_total', 'nox_identity_jwks_fetches_total']) {
    if (exported(name) || warned.has(name)) continue;
    warned.add(name);
    process.stderr.write(`warning: the sidecar's /metrics has no ${name}; its figures read NaN\n`);
  }
  return {
    ...result,
    tool: `${result.tool} ${label}`,
    extra,
    sidecarPeakRssMiB: peakRssMiB(sidecar.pid),
  };
}

/**
 * Bearer JWT validation: the same load once with a few tokens the sidecar has cached, once
 * with a new token on (nearly) every request, so each is a cache miss: decode, RS256
 * signature check against the cached JWKS, claim checks, cache insert.
 */
export const jwt: Scenario = {
  name: 'jwt',
  describe: `bearer RS256 JWTs on an AccessPolicy requiring authentication: ${CACHED_TOKENS} cached tokens, then a fresh token per request (token-cache misses)`,
  async run({ durationS, concurrency }) {
    const dir = scratchDir('bench-jwt');
    const stops: (() => Promise<void>)[] = [];
    const results: LoadResult[] = [];
    try {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const issuer = await serveJwks(publicKey);
      stops.push(() => issuer.close());

      // Each miss run (ghz, wrk) gets its own slice of the pool, sized for ~10k checks/s
      // over its warm-up and run; distinctTokens in the table says how many it had. Were a
      // run to go through its slice, it starts over at the beginning: still misses, as long
      // as the slice is larger than the sidecar's token cache (50 000 entries, LRU).
      const perRun = Math.max(60_000, 10_000 * (durationS + 1));
      const t0 = performance.now();
      const cachedTokens = await mint(privateKey, issuer.issuer, 0, CACHED_TOKENS);
      const pool = await mint(privateKey, issuer.issuer, CACHED_TOKENS, 2 * (WARM_TOKENS + perRun));
      const mintS = (performance.now() - t0) / 1000;
      process.stdout.write(
        `minted ${cachedTokens.length + pool.length} RS256 tokens in ${mintS.toFixed(1)} s\n`,
      );
      const path = '/api/items';
      const files = {
        ghzCached: join(dir, 'ghz-cached.bin'),
        ghzMissWarm: join(dir, 'ghz-miss-warm.bin'),
        ghzMiss: join(dir, 'ghz-miss.bin'),
        wrkCached: join(dir, 'wrk-cached.txt'),
        wrkMissWarm: join(dir, 'wrk-miss-warm.txt'),
        wrkMiss: join(dir, 'wrk-miss.txt'),
      };
      const ghzWarm = pool.slice(0, WARM_TOKENS);
      const ghzMain = pool.slice(WARM_TOKENS, WARM_TOKENS + perRun);
      const wrkWarm = pool.slice(WARM_TOKENS + perRun, 2 * WARM_TOKENS + perRun);
      const wrkMain = pool.slice(2 * WARM_TOKENS + perRun);
      writeGhzData(files.ghzCached, path, cachedTokens);
      writeGhzData(files.ghzMissWarm, path, ghzWarm);
      writeGhzData(files.ghzMiss, path, ghzMain);
      writeFileSync(files.wrkCached, `${cachedTokens.join('\n')}\n`);
      writeFileSync(files.wrkMissWarm, `${wrkWarm.join('\n')}\n`);
      writeFileSync(files.wrkMiss, `${wrkMain.join('\n')}\n`);

      const policyPath = join(dir, 'policy.yaml');
      writeFileSync(policyPath, policies(issuer.issuer, issuer.jwksUri));
      const upstream = await startUpstream();
      stops.push(() => upstream.close());
      const sidecar = await startSidecar({ policyPath, env: { NOX_LOG_LEVEL: 'warn' } });
      stops.push(() => sidecar.stop());
      const envoy = await startEnvoy({ authzPort: sidecar.grpcPort, upstreamPort: upstream.port });
      stops.push(() => envoy.stop());
      const target = { httpPort: sidecar.httpPort, pid: sidecar.service.child.pid! };

      // Fail fast on a setup that would only measure 401s: a token of each kind must pass.
      for (const token of [cachedTokens[0]!, ghzWarm[0]!]) {
        const res = await fetch(`${envoy.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
        if (res.status !== 200)
          throw new Error(`a bench token was refused: ${res.status} ${await res.text()}`);
      }

      const port = sidecar.grpcPort;
      const grpc = (dataFile: string, s: number) => () =>
        // Tens of thousands of decoded requests make a large, pointer-rich Go heap; at the default
        // GOGC ghz would spend its one CPU rescanning it instead of sending calls.
        ghz({ port, binaryFile: dataFile, env: { GOGC: '2000' }, concurrency, durationS: s });
      await grpc(files.ghzCached, 2)();
      results.push(
        await measured('cached', cachedTokens.length, grpc(files.ghzCached, durationS), target, issuer),
      );
      await grpc(files.ghzMissWarm, 1)();
      results.push(await measured('miss', ghzMain.length, grpc(files.ghzMiss, durationS), target, issuer));

      const url = `${envoy.url}${path}`;
      const http = (tokenFile: string, s: number) => () =>
        wrk({ url, concurrency, durationS: s, lua: wrkLua(tokenFile) });
      await http(files.wrkCached, 2)();
      results.push(
        await measured('cached', cachedTokens.length, http(files.wrkCached, durationS), target, issuer),
      );
      await http(files.wrkMissWarm, 1)();
      results.push(await measured('miss', wrkMain.length, http(files.wrkMiss, durationS), target, issuer));
    } finally {
      // Envoy first, the JWKS server last: the reverse of starting.
      for (const stop of stops.reverse()) {
        await stop().catch((e: unknown) => process.stderr.write(`stopping: ${String(e)}\n`));
      }
      // The token files run to hundreds of MB.
      rmSync(dir, { recursive: true, force: true });
    }
    return results;
  },
};
