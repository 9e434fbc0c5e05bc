import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { type OidcIssuer, startOidcIssuer } from '../harness/oidc.js';
import { scratchDir } from '../harness/process.js';
import { type RedisCluster, startRedisCluster } from '../harness/redisCluster.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { startUpstream, type Upstream } from '../harness/upstream.js';

// Per-user quotas end to end: a real OpenID provider issues the users' tokens, the sidecar
// validates them and counts in a real Redis Cluster, and Envoy answers the client.
const policies = (issuer: string, audience: string) => `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: test-op }
spec:
  type: oidc
  issuer: ${issuer}
  clientId: nox-gateway
  audiences: [${audience}]
  allowedAlgorithms: [RS256]
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api }
spec:
  providers: [test-op]
  identityHeaders: { user: x-user, claims: { x-client: client_id } }
  rules:
    - { name: signed-in, action: Allow, when: { authenticated: Authenticated } }
---
apiVersion: nox.dev/v1alpha1
kind: QuotaPolicy
metadata: { name: api-quota }
spec:
  subject: [{ type: User }]
  tierFrom: { claim: tier }
  defaultTier: free
  tiers:
    - name: free
      limits: [{ name: hourly, requests: 100, window: 1h }]
    - name: pro
      limits: [{ name: hourly, requests: 10000, window: 1h }]
`;

describe('quotas through real Envoy, with a real Redis Cluster and real tokens', () => {
  let cluster: RedisCluster;
  let issuer: OidcIssuer;
  let upstream: Upstream;
  let sidecar: Sidecar;
  let envoy: Envoy;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    [cluster, issuer, upstream] = await Promise.all([
      startRedisCluster({ masters: 3, replicasPerMaster: 1 }),
      startOidcIssuer([
        { clientId: 'free-app', secret: 'free-secret' },
        { clientId: 'pro-app', secret: 'pro-secret', claims: { tier: 'pro' } },
        { clientId: 'steady-app', secret: 'steady-secret' },
      ]),
      startUpstream(),
    ]);
    const dir = scratchDir('quota-e2e');
    writeFileSync(join(dir, 'policies.yaml'), policies(issuer.issuer, issuer.audience));
    sidecar = await startSidecar({
      policyPath: dir,
      env: {
        NOX_QUOTA_STORE: 'redis-cluster',
        // The test is about counting, not latency: don't let a loaded CI machine fail it closed.
        NOX_REDIS_TIMEOUT_MS: '1000',
        NOX_CHECK_DEADLINE_MS: '2000',
        NOX_REDIS_NODES: cluster.startupNodes.map((n) => `${n.host}:${n.port}`).join(','),
      },
    });
    envoy = await startEnvoy({
      authzPort: sidecar.grpcPort,
      upstreamPort: upstream.port,
      authzTimeoutMs: 3000,
    });
    for (const c of ['free-app', 'pro-app', 'steady-app']) tokens[c] = await issuer.token(c);
  });
  afterAll(async () => {
    await envoy?.stop();
    await sidecar?.stop();
    await upstream?.close();
    await issuer?.close();
    await cluster?.stop();
  });

  const get = (who: string, extra: Record<string, string> = {}) =>
    fetch(`${envoy.url}/api/items`, { headers: { authorization: `Bearer ${tokens[who]}`, ...extra } });

  it('gives a free-tier user 100 requests an hour; the 101st gets 429 with standard headers', async () => {
    for (let i = 1; i <= 100; i++) {
      // The client's own identity headers are forgeries: replaced or removed before the upstream.
      const res = await get('free-app', { 'x-user': 'admin', 'x-nox-user': 'admin', 'x-client': 'root' });
      expect(res.status, `request ${i}`).toBe(200);
      if (i === 1) {
        expect(res.headers.get('ratelimit-policy')).toBe('"hourly";q=100;w=3600');
        expect(res.headers.get('ratelimit')).toMatch(/^"hourly";r=99;t=\d+$/);
        const seen = upstream.seen.at(-1)!.headers;
        expect(seen['x-user']).toBe('test-op:free-app');
        expect(seen['x-client']).toBe('free-app');
        expect(seen['x-nox-user']).toBeUndefined();
        expect(seen['x-nox-tier']).toBe('free');
        expect(seen['x-nox-quota-remaining']).toBe('99');
      }
    }
    const before = upstream.seen.length;
    const denied = await get('free-app');
    expect(denied.status).toBe(429);
    const retryAfter = Number(denied.headers.get('retry-after'));
    // One request frees up every hour/100 = 36 s.
    expect(retryAfter).toBeGreaterThan(30);
    expect(retryAfter).toBeLessThanOrEqual(36);
    expect(denied.headers.get('ratelimit')).toMatch(/^"hourly";r=0;t=\d+$/);
    expect(denied.headers.get('ratelimit-policy')).toBe('"hourly";q=100;w=3600');
    expect(((await denied.json()) as { error: string }).error).toBe('QUOTA_EXCEEDED');
    expect(upstream.seen.length).toBe(before);
  });

  it('does not limit a pro-tier user at 101', async () => {
    for (let i = 1; i <= 101; i++) expect((await get('pro-app')).status, `request ${i}`).toBe(200);
    expect(upstream.seen.at(-1)!.headers['x-nox-tier']).toBe('pro');
  });

  it('rejects a forged or tampered token with 401, and a missing one by the access rule', async () => {
    const [h, p, s] = tokens['pro-app']!.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), sub: 'admin' })).toString('base64url')}.${s}`;
    const res = await fetch(`${envoy.url}/api/items`, { headers: { authorization: `Bearer ${forged}` } });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer error="invalid_token"');
    expect((await fetch(`${envoy.url}/api/items`)).status).toBe(403);
  });

  it('keeps counting across a restart of the sidecar and of every Redis node', async () => {
    for (let i = 0; i < 60; i++) expect((await get('steady-app')).status).toBe(200);
    await sidecar.stop();
    for (const n of cluster.nodes) await cluster.restartNode(n.port);
    await cluster.waitHealthy(60_000);
    sidecar = await sidecar.restart();
    let ok = 0;
    for (;;) {
      const status = (await get('steady-app')).status;
      if (status !== 200) {
        expect(status).toBe(429);
        break;
      }
      ok++;
    }
    expect(ok).toBe(40);
  });
});
