import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:https';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import type { ICheckResponse } from '../../proto/envoy.js';
import { RedisRevocations } from '../../sidecar/identity/revocations.js';
import { createNamespace, installCrds } from '../harness/crds.js';
import { type GithubApi, startGithubApi } from '../harness/github.js';
import { httpCheck, SidecarClient } from '../harness/grpcClient.js';
import { type IntrospectingIssuer, startIntrospectingIssuer } from '../harness/introspection.js';
import { type Kube, startKube } from '../harness/kube.js';
import { kubeRequest, serverSideApply } from '../harness/kubeHttp.js';
import { waitUntil } from '../harness/process.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { scrapedMetric } from '../harness/registry.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';

// Bounded fan-out (issue 12), through the built sidecar over gRPC, with the real dependencies
// it would ask: Redis (sessions, revocations), a real kube-apiserver (TokenReview), a real
// OpenID provider (introspection, JWKS) and a stand-in for GitHub's REST API. One client sends
// 10 000 checks with made-up credentials of each kind; the calls are counted AT the servers
// (Redis INFO commandstats, the API server's apiserver_request_total, requests served by the
// provider and the GitHub stand-in) and must stay within the documented bounds (README,
// "Bounded fan-out"; the numbers live in sidecar/identity/fanout.ts). The sidecar's RSS, from
// its /metrics, stays bounded too.

const NS = 'shop';
const N = 10_000;
/** Checks in flight at once from the one client. */
const CONCURRENCY = 32;
const log = createLogger('fanout-test', { level: 'silent' });
const b64url = (v: unknown) =>
  Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const rnd = (bytes: number) => randomBytes(bytes).toString('base64url');
/** Random characters of GitHub's token alphabet ([A-Za-z0-9_]). */
const ghRnd = (bytes: number) => rnd(bytes).replace(/-/g, '_');
const tokenId = (token: string) => `token:${createHash('sha256').update(token).digest('base64url')}`;

/** HTTP status a check answers (200: allowed) and its error code. */
function outcome(r: ICheckResponse): { status: number; code: string } {
  if (r.okResponse) return { status: 200, code: 'OK' };
  const body = r.deniedResponse?.body ?? '';
  let code = '?';
  try {
    code = (JSON.parse(body) as { error?: string }).error ?? '?';
  } catch {
    code = body.startsWith('<') ? 'HTML' : '?';
  }
  return { status: r.deniedResponse?.status?.code ?? 0, code };
}

describe('bounded fan-out: 10 000 made-up credentials of each kind', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let redis: RedisServer;
  let raw: Redis;
  let idp: IntrospectingIssuer;
  let github: GithubApi;
  let sidecar: Sidecar;
  let client: SidecarClient;
  let admin: RedisRevocations;
  let clusterIssuer: string;
  let clusterKid: string;
  const figures: Record<string, unknown> = {};

  /** GET calls Redis has served (sessions are the only GETs on this route). */
  const redisGets = async () =>
    Number(/cmdstat_get:calls=(\d+)/.exec(await raw.info('commandstats'))?.[1] ?? 0);
  /** TokenReviews the API server has served, from its own metrics. */
  const tokenReviews = async (): Promise<number> => {
    const opts: Parameters<typeof request>[1] = { method: 'GET' };
    await kc.applyToHTTPSOptions(opts);
    const text = await new Promise<string>((resolve, reject) => {
      const req = request(`${kube.server}/metrics`, opts, (res) => {
        let body = '';
        res.on('data', (c) => {
          body += c;
        });
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.end();
    });
    return text
      .split('\n')
      .filter(
        (l) =>
          l.startsWith('apiserver_request_total{') &&
          l.includes('resource="tokenreviews"') &&
          l.includes('verb="POST"'),
      )
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  };
  const introspections = () => idp.hits.get('/token/introspection') ?? 0;
  const jwksReads = () => idp.hits.get('/jwks') ?? 0;
  const counts = async () => ({
    redisGet: await redisGets(),
    tokenReview: await tokenReviews(),
    introspection: introspections(),
    jwks: jwksReads(),
    github: github.requests(),
  });
  const rss = () => scrapedMetric(sidecar.httpPort, 'nox_process_resident_memory_bytes');

  /** 8 session cookies: 2 malformed, 6 well formed, made up (or drawn from `pool` when given). */
  const madeUpSessions = (i: number, pool?: readonly string[]) => {
    const made = Array.from({ length: 6 }, (_, k) => (pool ? pool[(i * 7 + k) % pool.length]! : rnd(32)));
    const ids = ['short', 'not!a!session!id', ...made];
    return { cookie: ids.map((id) => `__Host-nox_session=${id}`).join('; ') };
  };
  /** Unsigned and garbage JWTs naming the provider's issuer. */
  const madeUpJwt = (i: number) => {
    const payload = { iss: idp.issuer, sub: rnd(6), aud: 'https://api.nox.test', exp: 4e9 };
    const token =
      i % 3 === 0
        ? `${b64url({ alg: 'none' })}.${b64url(payload)}.`
        : i % 3 === 1
          ? `${b64url({ alg: 'RS256', kid: rnd(6) })}.${b64url(payload)}.${rnd(256)}`
          : `${rnd(20)}.${rnd(40)}.${rnd(30)}`;
    return { authorization: `Bearer ${token}` };
  };
  /** ServiceAccount-looking JWTs: unsigned, another issuer, or the cluster's issuer and key id with a forged signature. */
  const madeUpServiceAccountJwt = (i: number) => {
    const sub = `system:serviceaccount:${NS}:sa-${rnd(4)}`;
    const payload = {
      iss: i % 3 === 1 ? 'https://evil.test' : clusterIssuer,
      sub,
      aud: [clusterIssuer],
      exp: 4e9,
    };
    const token =
      i % 3 === 0
        ? `${b64url({ alg: 'none' })}.${b64url(payload)}.`
        : `${b64url({ alg: 'RS256', kid: clusterKid })}.${b64url(payload)}.${rnd(256)}`;
    return { authorization: `Bearer ${token}` };
  };
  /** Opaque tokens: a quarter too short to be anyone's, the rest well formed. */
  const madeUpOpaque = (i: number) => ({ authorization: `Bearer ${i % 4 === 0 ? rnd(9) : rnd(32)}` });
  const madeUpGithub = (i: number) => ({
    authorization: `Bearer ${i % 2 === 0 ? `ghp_${ghRnd(27)}` : `github_pat_${ghRnd(61)}`}`,
  });

  const check = (headers: Record<string, string>) =>
    client.check(httpCheck('/api/orders', { headers }), 10_000).then(outcome);

  /** Sends `n` checks, `CONCURRENCY` at a time, each with the headers `make(i)` gives; tallies the outcomes. */
  async function flood(n: number, make: (i: number) => Record<string, string>) {
    const tally = new Map<string, number>();
    let next = 0;
    const started = Date.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < n) {
          const i = next++;
          const { status, code } = await check(make(i));
          const k = `${status} ${code}`;
          tally.set(k, (tally.get(k) ?? 0) + 1);
        }
      }),
    );
    return { seconds: (Date.now() - started) / 1000, tally: Object.fromEntries(tally) };
  }

  beforeAll(async () => {
    [kube, redis, idp, github] = await Promise.all([
      startKube(),
      startRedis({ appendonly: false }),
      startIntrospectingIssuer([
        { clientId: 'nox-gateway', secret: 'gateway-secret' },
        { clientId: 'billing', secret: 'billing-secret' },
      ]),
      startGithubApi(),
    ]);
    raw = new Redis({ host: redis.host, port: redis.port });
    kc = kube.kubeConfig();
    await installCrds(kc);
    await createNamespace(kc, NS);
    const core = kc.makeApiClient(CoreV1Api);
    for (const [name, data] of [
      ['corp-oauth', { 'client-secret': 'gateway-secret' }],
      ['corp-session', { key: randomBytes(32).toString('base64') }],
    ] as const)
      await core.createNamespacedSecret({ namespace: NS, body: { metadata: { name }, stringData: data } });
    await core.createNamespacedServiceAccount({ namespace: NS, body: { metadata: { name: 'billing-job' } } });
    // The cluster's ServiceAccount issuer and key id, as anyone may read them: forged tokens use both.
    clusterIssuer = (
      (await kubeRequest(kc, 'GET', '/.well-known/openid-configuration')).body as { issuer: string }
    ).issuer;
    clusterKid = (
      (await kubeRequest(kc, 'GET', '/openid/v1/jwks', { accept: 'application/jwk-set+json' })).body as {
        keys: { kid: string }[];
      }
    ).keys[0]!.kid;

    const providers = `/apis/nox.dev/v1alpha1/namespaces/${NS}/oauth2providers`;
    const apply = async (path: string, obj: Record<string, unknown>) => {
      const r = await serverSideApply(kc, path, obj);
      if (r.status >= 300) throw new Error(`${path}: ${r.status} ${JSON.stringify(r.body)}`);
    };
    await apply(providers, {
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'OAuth2Provider',
      metadata: { name: 'corp' },
      spec: {
        type: 'oidc',
        issuer: idp.issuer,
        clientId: 'nox-gateway',
        clientSecretRef: { name: 'corp-oauth', key: 'client-secret' },
        audiences: ['https://api.nox.test'],
        allowedAlgorithms: ['RS256'],
        login: {
          enabled: true,
          callbackPath: '/oauth2/callback',
          encryptionKeySecretRef: { name: 'corp-session', key: 'key' },
        },
      },
    });
    await apply(providers, {
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'OAuth2Provider',
      metadata: { name: 'gh' },
      spec: { type: 'github', clientId: 'Iv1.0123456789abcdef', endpoints: { userinfo: github.url } },
    });
    await apply(`/apis/nox.dev/v1alpha1/namespaces/${NS}/accesspolicies`, {
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'AccessPolicy',
      metadata: { name: 'api' },
      spec: {
        match: { paths: [{ type: 'Prefix', value: '/api' }] },
        providers: ['corp', 'gh'],
        login: { providers: ['corp'] },
        serviceAccounts: {},
        rules: [{ name: 'signed-in', action: 'Allow', when: { authenticated: 'Authenticated' } }],
        defaultAction: 'Deny',
      },
    });

    sidecar = await startSidecar({
      policyPath: '',
      env: {
        NOX_CONFIG_SOURCE: 'kubernetes',
        NOX_KUBECONFIG: kube.kubeconfigPath,
        NOX_WATCH_NAMESPACES: NS,
        NOX_SESSION_STORE: 'redis',
        NOX_QUOTA_STORE: 'redis',
        NOX_REDIS_NODES: `127.0.0.1:${redis.port}`,
        NOX_REDIS_WAIT_REPLICAS: '0',
        // What is measured is calls to dependencies, not latency on a shared 2-core machine.
        NOX_CHECK_DEADLINE_MS: '5000',
        NOX_LOG_LEVEL: 'warn',
        // The V8 heap bound the chart gives the ext_authz container (authz.maxOldSpaceMiB):
        // without one V8 sizes its heap by the host's memory, not the pod's limit.
        NODE_OPTIONS: '--max-old-space-size=320',
      },
    });
    client = new SidecarClient(sidecar.grpcPort);
    await waitUntil('the policy in force', async () => (await check({})).code !== 'NO_POLICY', 20_000, {
      intervalMs: 100,
    });
    admin = new RedisRevocations(
      [{ host: '127.0.0.1', port: redis.port }],
      false,
      undefined,
      log,
      new Registry(),
    );
  });

  afterAll(async () => {
    // The figures the report quotes.
    console.log(`fan-out figures: ${JSON.stringify(figures, null, 1)}`);
    client?.close();
    await admin?.stop();
    raw?.disconnect();
    await sidecar?.stop();
    await Promise.all([idp?.close(), github?.close(), redis?.stop(), kube?.stop()]);
  });

  it('holds the documented bounds, counted at each server, with RSS bounded', {
    timeout: 240_000,
  }, async () => {
    // Warm-up: a valid token of each remote kind, so the caches and the cluster keys are loaded.
    const opaque = await idp.token('billing');
    const ghToken = `ghp_${ghRnd(27)}`;
    github.setToken(ghToken, { login: 'octocat', id: 583231 });
    const core = kc.makeApiClient(CoreV1Api);
    const saToken = (
      await core.createNamespacedServiceAccountToken({
        name: 'billing-job',
        namespace: NS,
        body: { spec: { expirationSeconds: 3600, audiences: [] } },
      })
    ).status!.token;
    for (const t of [opaque, ghToken, saToken])
      expect(await check({ authorization: `Bearer ${t}` })).toEqual({ status: 200, code: 'OK' });
    const rssBefore = await rss();
    expect(rssBefore).toBeGreaterThan(0); // the metric is there: the bound below means something
    /** RSS (MiB) after each phase: it levels off, it does not climb with the number of credentials. */
    const rssByPhase: number[] = [];
    let prev = await counts();
    const delta = async () => {
      const now = await counts();
      const d = Object.fromEntries(
        Object.entries(now).map(([k, v]) => [k, v - prev[k as keyof typeof prev]]),
      ) as typeof now;
      prev = now;
      rssByPhase.push(Math.round((await rss()) / 2 ** 20));
      return d;
    };

    // 1. Session cookies: 8 per request, 2 malformed and 6 well formed. First half: every id
    //    new (so each request may cost one read, never more). Second half: the ids are drawn
    //    from a pool of 500 made-up ones; each is read once, then known missing for 30 s.
    const pool = Array.from({ length: 500 }, () => rnd(32));
    const sessions = await flood(N, (i) => madeUpSessions(i, i < N / 2 ? undefined : pool));
    const sessionCalls = await delta();
    figures.sessions = { ...sessions, calls: sessionCalls };
    // ≤ 1 store read per request, and ≤ 1 per made-up id within the negative cache's 30 s.
    expect(sessionCalls.redisGet).toBeLessThanOrEqual(N / 2 + pool.length);
    expect(sessionCalls.redisGet).toBeGreaterThanOrEqual(N / 2); // the reads are real, and counted
    expect({ ...sessionCalls, redisGet: 0 }).toEqual({
      redisGet: 0,
      tokenReview: 0,
      introspection: 0,
      jwks: 0,
      github: 0,
    });

    // 2. Unsigned and garbage JWTs naming the provider's issuer: never a remote call beyond
    //    the JWKS re-read on an unknown key id, at most once per cooldown (30 s).
    const jwts = await flood(N, madeUpJwt);
    const jwtCalls = await delta();
    figures.jwts = { ...jwts, calls: jwtCalls };
    expect(jwtCalls.jwks).toBeLessThanOrEqual(1 + Math.ceil(jwts.seconds / 30));
    expect({ ...jwtCalls, jwks: 0 }).toEqual({
      redisGet: 0,
      tokenReview: 0,
      introspection: 0,
      jwks: 0,
      github: 0,
    });
    expect(jwts.tally).toEqual({ '401 UNAUTHENTICATED': N });

    // 3. ServiceAccount-looking JWTs: unsigned, another issuer, and the cluster's own issuer
    //    and key id with a forged signature. The local checks stop all of them: no TokenReview.
    const sas = await flood(N, madeUpServiceAccountJwt);
    const saCalls = await delta();
    figures.serviceAccounts = { ...sas, calls: saCalls };
    expect(saCalls).toEqual({ redisGet: 0, tokenReview: 0, introspection: 0, jwks: 0, github: 0 });
    expect(sas.tally).toEqual({ '401 UNAUTHENTICATED': N });

    // 4. Opaque tokens, every one new: a quarter too short to be anyone's (no call), the rest
    //    well formed. Introspections stay within the endpoint's budget: burst 200 + 100/s.
    //    Meanwhile a valid cached token keeps working: caps never touch cache hits.
    let legit = 0;
    let legitFailed = 0;
    let stopLegit = false;
    const legitLoop = (async () => {
      while (!stopLegit) {
        const r = await check({ authorization: `Bearer ${opaque}` });
        if (r.status === 200) legit++;
        else legitFailed++;
      }
    })();
    const opaques = await flood(N, madeUpOpaque);
    stopLegit = true;
    await legitLoop;
    const opaqueCalls = await delta();
    figures.opaque = {
      ...opaques,
      calls: opaqueCalls,
      validCachedTokenDuringFlood: { allowed: legit, denied: legitFailed },
    };
    expect(opaqueCalls.introspection).toBeLessThanOrEqual(200 + Math.ceil(100 * opaques.seconds));
    expect({ ...opaqueCalls, introspection: 0 }).toEqual({
      redisGet: 0,
      tokenReview: 0,
      introspection: 0,
      jwks: 0,
      github: 0,
    });
    expect(opaques.tally['401 UNAUTHENTICATED']).toBeGreaterThanOrEqual(N / 4); // the short ones, locally
    expect(opaques.tally['503 IDENTITY_DEPENDENCY_BUSY']).toBeGreaterThan(0);
    expect(Object.keys(opaques.tally).sort()).toEqual([
      '401 UNAUTHENTICATED',
      '503 IDENTITY_DEPENDENCY_BUSY',
    ]);
    expect(legitFailed).toBe(0);
    expect(legit).toBeGreaterThan(0);

    // 5. GitHub-looking tokens, every one new: GitHub sees at most burst 50 + 20/s.
    const ghs = await flood(N, madeUpGithub);
    const ghCalls = await delta();
    figures.github = { ...ghs, calls: ghCalls };
    expect(ghCalls.github).toBeLessThanOrEqual(50 + Math.ceil(20 * ghs.seconds));
    expect({ ...ghCalls, github: 0 }).toEqual({
      redisGet: 0,
      tokenReview: 0,
      introspection: 0,
      jwks: 0,
      github: 0,
    });
    expect(Object.keys(ghs.tally).sort()).toEqual(['401 UNAUTHENTICATED', '503 IDENTITY_DEPENDENCY_BUSY']);

    // 6. The same bad credential again and again costs nothing remote (negative caches).
    const badOpaque = rnd(32);
    const badGh = `gho_${ghRnd(27)}`;
    await waitUntil(
      'the budgets refilled',
      async () => (await check({ authorization: `Bearer ${badOpaque}` })).status === 401,
      10_000,
      { intervalMs: 200 },
    );
    await waitUntil(
      'the budgets refilled',
      async () => (await check({ authorization: `Bearer ${badGh}` })).status === 401,
      10_000,
      { intervalMs: 200 },
    );
    await delta();
    const repeats = await flood(2_000, (i) => ({ authorization: `Bearer ${i % 2 ? badOpaque : badGh}` }));
    const repeatCalls = await delta();
    figures.repeatedBadCredential = { ...repeats, calls: repeatCalls };
    expect(repeats.tally).toEqual({ '401 UNAUTHENTICATED': 2_000 });
    expect(repeatCalls).toEqual({ redisGet: 0, tokenReview: 0, introspection: 0, jwks: 0, github: 0 });

    const rssAfter = await rss();
    figures.rssMiB = {
      before: Math.round(rssBefore / 2 ** 20),
      afterEachPhase: rssByPhase,
      after: Math.round(rssAfter / 2 ** 20),
      heapUsed: Math.round(
        (await scrapedMetric(sidecar.httpPort, 'nox_nodejs_heap_size_used_bytes')) / 2 ** 20,
      ),
    };
    figures.sidecarMetrics = {
      negativeCacheHits: await scrapedMetric(sidecar.httpPort, 'nox_identity_negative_cache_hits_total'),
      localRejects: await scrapedMetric(sidecar.httpPort, 'nox_identity_local_rejects_total'),
      rejectedByBound: await scrapedMetric(sidecar.httpPort, 'nox_identity_dependency_rejected_total'),
      inFlightNow: await scrapedMetric(sidecar.httpPort, 'nox_identity_dependency_in_flight'),
    };
    // 52 000 made-up credentials leave at most the bounded negative caches behind (10 000
    // hashes per method); the rest of the growth is V8 sizing its heap for the load, once.
    expect(rssAfter).toBeLessThan(512 * 2 ** 20);
    expect(figures.sidecarMetrics).toMatchObject({ inFlightNow: 0 });

    // No credential in the sidecar's log or its metrics.
    const metricsText = await (await fetch(`http://127.0.0.1:${sidecar.httpPort}/metrics`)).text();
    for (const secret of [opaque, ghToken, saToken, badOpaque, badGh, pool[0]!])
      expect(metricsText.includes(secret), 'a credential in /metrics').toBe(false);
    const { readFileSync } = await import('node:fs');
    const logText = readFileSync(sidecar.service.logFile, 'utf8');
    for (const secret of [opaque, ghToken, saToken, badOpaque, badGh, pool[0]!])
      expect(logText.includes(secret), 'a credential in the log').toBe(false);
  });

  it('levels off: more floods of every kind after the caches are full leave RSS where it was', {
    timeout: 180_000,
  }, async () => {
    // The test above filled every bounded cache (10 000 per method); from here on a made-up
    // credential replaces one, so what RSS still gains is a leak, not a cache filling up.
    const pool = Array.from({ length: 500 }, () => rnd(32));
    const kinds = [
      (i: number) => madeUpSessions(i, i % 2 ? pool : undefined),
      madeUpJwt,
      madeUpServiceAccountJwt,
      madeUpOpaque,
      madeUpGithub,
    ];
    const mixed = (i: number) => kinds[i % kinds.length]!(Math.floor(i / kinds.length));
    const mib = async () => Math.round((await rss()) / 2 ** 20);
    const rounds: number[] = [await mib()];
    for (let r = 0; r < 3; r++) {
      await flood(kinds.length * (N / 2), mixed);
      rounds.push(await mib());
    }
    figures.levelsOff = {
      rssMiBAfterEachRound: rounds,
      heapUsedMiB: Math.round(
        (await scrapedMetric(sidecar.httpPort, 'nox_nodejs_heap_size_used_bytes')) / 2 ** 20,
      ),
    };
    // 75 000 more made-up credentials: the last two rounds together add less than 32 MiB.
    expect(rounds[3]! - rounds[1]!).toBeLessThan(32);
  });

  it('revokes an opaque, a GitHub and a ServiceAccount token on the sidecar within 1 s', async () => {
    const opaque = await idp.token('billing');
    const ghToken = `gho_${ghRnd(27)}`;
    github.setToken(ghToken, { login: 'hubot', id: 42 });
    const saToken = (
      await kc.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({
        name: 'billing-job',
        namespace: NS,
        body: { spec: { expirationSeconds: 3600, audiences: [] } },
      })
    ).status!.token;
    const took: Record<string, number> = {};
    for (const [kind, token] of [
      ['opaque', opaque],
      ['github', ghToken],
      ['serviceAccount', saToken],
    ] as const) {
      const use = () => check({ authorization: `Bearer ${token}` });
      // Allowed, and cached: without the revocation it would be trusted for minutes.
      await waitUntil(`${kind} token allowed`, async () => (await use()).status === 200, 10_000, {
        intervalMs: 200,
      });
      expect(await use()).toEqual({ status: 200, code: 'OK' });
      const revokedAt = Date.now();
      await admin.revoke(tokenId(token), Date.now() + 3_600_000);
      await waitUntil(`${kind} token refused`, async () => (await use()).status === 401, 1000, {
        intervalMs: 20,
      });
      took[kind] = Date.now() - revokedAt;
      expect(took[kind]).toBeLessThanOrEqual(1000);
    }
    figures.revocationMs = took;
  });
});
