import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../common/db/migrate.js';
import { createLogger } from '../../common/logger.js';
import { RedisSessionStore } from '../../sidecar/login/redisSessionStore.js';
import type { SessionRecord } from '../../sidecar/login/sessionStore.js';
import { sessionHash } from '../../sidecar/login/sessionStore.js';
import { Browser, type Hop } from '../harness/browser.js';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { type LoginOp, startLoginOp } from '../harness/oidcLogin.js';
import { writeSecret } from '../harness/policies.js';
import { freePorts } from '../harness/ports.js';
import { type PgNode, pgQuery, startPostgres } from '../harness/postgres.js';
import { scratchDir, sleep, waitUntil } from '../harness/process.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { echoedHeaders, startUpstream, type Upstream } from '../harness/upstream.js';

const bodyOf = (h: Hop) => JSON.parse(h.body) as { error?: string; reason?: string };

const sessionCookie =
  /^__Host-nox_session=([A-Za-z0-9_-]{43}); Path=\/; Max-Age=3600; HttpOnly; Secure; SameSite=Lax$/;

function policy(issuer: string, logoutTarget: string): string {
  return `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: corp }
spec:
  type: oidc
  issuer: ${issuer}
  clientId: web
  clientSecretRef: { name: corp-oidc, key: client-secret }
  scopes: [openid, email, profile, groups]
  login:
    enabled: true
    callbackPath: /oauth2/callback
    logoutPath: /logout
    postLogoutRedirect: ${logoutTarget}
    sessionTTL: 1h
    refreshBefore: 4s
    cookie: { name: nox_session, sameSite: Lax }
    encryptionKeySecretRef: { name: corp-session, key: session-key }
---
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: other }
spec:
  type: oidc
  issuer: http://127.0.0.1:9
  clientId: other
  login:
    enabled: true
    callbackPath: /oauth2/other
    encryptionKeySecretRef: { name: corp-session, key: session-key }
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: app }
spec:
  match: { paths: [{ type: Prefix, value: /app }] }
  providers: [corp]
  login: { providers: [corp] }
  rules:
    - { name: staff, action: Allow, when: { groups: [staff] } }
  defaultAction: Deny
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: multi }
spec:
  match: { paths: [{ type: Prefix, value: /multi }] }
  login: { providers: [corp, other] }
  defaultAction: Deny
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: public }
spec:
  match: { paths: [{ type: Prefix, value: /public }] }
  providers: [corp]
  defaultAction: Allow
`;
}

/** A Secret as the files source reads it: <dir>/<namespace>/<secret>/<key>. */
// Real Envoy (two, each with its own built nox-authz process) in front of an upstream; a
// real OpenID provider; sessions in a real Redis shared by both sidecars; a client that
// behaves like a browser as far as redirects and cookies go. The test process reaches the
// sessions only through that Redis, as an operator's tooling would.
describe('browser login through real Envoy, shared sessions in Redis', () => {
  let op: LoginOp;
  let redis: RedisServer;
  let db: PgNode;
  let raw: Redis;
  /** The test's own client of the session store: revocations from here are cross-process. */
  let sessions: RedisSessionStore;
  let upstream: Upstream;
  let sidecars: Sidecar[] = [];
  let envoys: Envoy[] = [];
  let a: Envoy;
  let b: Envoy;

  beforeAll(async () => {
    const ports = await freePorts(2);
    const origins = ports.map((p) => `http://127.0.0.1:${p}`);
    op = await startLoginOp({
      clients: [
        {
          clientId: 'web',
          secret: 'web-secret',
          redirectUris: origins.map((o) => `${o}/oauth2/callback`),
          postLogoutRedirectUris: [`${origins[0]}/bye`],
        },
      ],
      users: {
        alice: { groups: ['staff'] },
        bob: { groups: ['staff'] },
        carol: { groups: ['staff'] },
        dave: { groups: ['staff'] },
      },
      accessTokenTtlS: 6,
    });
    redis = await startRedis({ appendonly: false });
    // The audit log: a session's refreshes are session events beside its login's decision.
    db = await startPostgres();
    const pool = new pg.Pool({ connectionString: db.connectionString, max: 1 });
    await migrate(pool, createLogger('browser-login-test', { level: 'silent' }));
    await pool.end();
    raw = new Redis({ host: redis.host, port: redis.port });
    sessions = new RedisSessionStore({
      nodes: [{ host: redis.host, port: redis.port }],
      cluster: false,
      timeoutMs: 500,
      log: createLogger('browser-login-test', { level: 'warn' }),
    });
    await sessions.ready();
    const secretsDir = scratchDir('login-secrets');
    writeSecret(secretsDir, 'default', 'corp-oidc', { 'client-secret': 'web-secret' });
    writeSecret(secretsDir, 'default', 'corp-session', {
      'session-key': randomBytes(32).toString('base64'),
    });
    const policyPath = join(scratchDir('login-policy'), 'policy.yaml');
    writeFileSync(policyPath, policy(op.issuer, `${origins[0]}/bye`));
    upstream = await startUpstream();
    sidecars = await Promise.all(
      ports.map((_, i) =>
        startSidecar({
          policyPath,
          env: {
            NOX_DATABASE_URL: db.connectionString,
            POD_NAME: `browser-login-${i}`,
            NOX_SECRETS_DIR: secretsDir,
            NOX_SESSION_STORE: 'redis',
            NOX_REDIS_NODES: `${redis.host}:${redis.port}`,
            NOX_SESSION_TIMEOUT_MS: '500',
            // A code exchange or refresh is a round trip to the provider inside the check.
            NOX_CHECK_DEADLINE_MS: '2500',
          },
        }),
      ),
    );
    envoys = await Promise.all(
      ports.map((listenPort, i) =>
        startEnvoy({
          authzPort: sidecars[i]!.grpcPort,
          upstreamPort: upstream.port,
          listenPort,
          authzTimeoutMs: 3000,
        }),
      ),
    );
    [a, b] = envoys as [Envoy, Envoy];
  });
  afterAll(async () => {
    await Promise.all(envoys.map((e) => e.stop()));
    await Promise.all(sidecars.map((s) => s.stop()));
    await sessions?.close();
    raw?.disconnect();
    await upstream?.close();
    await redis?.stop();
    await db?.stop();
    await op?.close();
  });

  async function login(
    user: string,
    via = a,
    path = '/app/page?x=1',
  ): Promise<{ browser: Browser; hops: Hop[]; id: string }> {
    op.user = user;
    const browser = new Browser();
    const hops = await browser.navigate(`${via.url}${path}`);
    expect(hops.at(-1)!.status, hops.map((h) => `${h.status} ${h.url}`).join('\n')).toBe(200);
    return { browser, hops, id: browser.cookie('127.0.0.1', '__Host-nox_session')! };
  }

  /** The cookies a browser sends to a path on 127.0.0.1 other than Nox's: what the upstream should get. */
  const otherCookies = (browser: Browser) =>
    [...(browser.jar.get('127.0.0.1') ?? [])]
      .filter(([n, c]) => c.path === '/' && c.expiresAt > Date.now() && !n.includes('nox_session'))
      .map(([n, c]) => `${n}=${c.value}`)
      .join('; ');
  const seenBy = (hop: Hop) => echoedHeaders(hop.body);
  const record = async (id: string) => {
    const json = await raw.get(`nox:s:{${sessionHash(id)}}`);
    return json === null ? undefined : (JSON.parse(json) as SessionRecord);
  };

  it('sends a browser through the provider and back, then lets it in with its identity', async () => {
    const { browser, hops, id } = await login('alice');
    const [first] = hops;
    expect(first!.status).toBe(302);
    const auth = new URL(first!.location!);
    expect(`${auth.origin}${auth.pathname}`).toBe(`${op.issuer}/auth`);
    expect(auth.searchParams.get('code_challenge_method')).toBe('S256');
    expect(auth.searchParams.get('redirect_uri')).toBe(`${a.url}/oauth2/callback`);
    expect(auth.searchParams.get('state')).toBeTruthy();
    expect(auth.searchParams.get('nonce')).toBeTruthy();
    expect(auth.searchParams.get('scope')).toBe('openid email profile groups');
    expect(first!.setCookies[0]).toMatch(
      /^__Secure-nox_session_login_[\w-]{12}=[\w.-]+; Path=\/oauth2\/callback; Max-Age=600; HttpOnly; Secure; SameSite=Lax$/,
    );
    const callback = hops.find((h) => h.url.startsWith(`${a.url}/oauth2/callback?`))!;
    expect(callback.status).toBe(302);
    expect(callback.location).toBe(`${a.url}/app/page?x=1`);
    expect(callback.setCookies).toHaveLength(1);
    expect(callback.setCookies[0]).toMatch(sessionCookie);
    const page = hops.at(-1)!;
    expect(seenBy(page)).toMatchObject({
      'x-nox-user': 'corp:alice',
      'x-nox-provider': 'corp',
      'x-nox-email': 'alice@example.test',
      'x-nox-groups': 'staff',
    });
    expect(upstream.seen.at(-1)!.url).toBe('/app/page?x=1');
    // The upstream gets the identity, never the session cookie; the browser's other cookies
    // for this host (here the provider's, as it runs on 127.0.0.1 too) pass unchanged.
    expect(seenBy(page).cookie ?? '').toBe(otherCookies(browser));
    expect(seenBy(page).cookie ?? '').not.toContain(id);
    // The cookie holds only the session id; tokens are sealed in Redis, no JWT in the clear.
    const stored = await raw.get(`nox:s:{${sessionHash(id)}}`);
    expect(stored).toContain('"subject":"corp:alice"');
    expect(stored).not.toContain('eyJ');
    expect(Number(await raw.pttl(`nox:s:{${sessionHash(id)}}`))).toBeGreaterThan(3_500_000);
  });

  it('answers API clients 401 with WWW-Authenticate, never a redirect', async () => {
    const apiClients: Record<string, string>[] = [
      { accept: 'application/json' },
      { accept: '*/*' },
      { accept: 'text/html', authorization: 'Bearer not-a-jwt' },
    ];
    for (const headers of apiClients) {
      const res = await fetch(`${a.url}/app/page`, { headers, redirect: 'manual' });
      expect(res.status, JSON.stringify(headers)).toBe(401);
      expect(res.headers.get('location')).toBeNull();
      // No credential: a bare challenge (RFC 6750 §3.1); a bad one: invalid_token.
      expect(res.headers.get('www-authenticate')).toBe(
        headers.authorization ? 'Bearer error="invalid_token"' : 'Bearer',
      );
    }
    // A browser's POST is not redirected either: its body would not survive the trip.
    const post = await new Browser().request(`${a.url}/app/form`, { method: 'POST' });
    expect(post.status).toBe(401);
    // An anonymous browser on a route that allows anonymous callers just passes.
    expect((await new Browser().request(`${a.url}/public/x`)).status).toBe(200);
  });

  it('passes the upstream every cookie of the request but Nox’s own', async () => {
    const { id } = await login('alice');
    const browser = new Browser();
    browser.setCookie('127.0.0.1', '__Host-nox_session', id);
    for (const via of [a, b]) {
      const hop = await browser.request(`${via.url}/app/only-session`);
      expect(hop.status).toBe(200);
      expect(seenBy(hop)['x-nox-user']).toBe('corp:alice');
      // Nothing but Nox's cookie: the upstream gets no Cookie header at all.
      expect(seenBy(hop).cookie).toBeUndefined();
    }
    browser.setCookie('127.0.0.1', 'theme', 'dark');
    browser.setCookie('127.0.0.1', '__Secure-nox_session_login_AAAAAAAAAAAA', 'left-over-pre-login');
    browser.setCookie('127.0.0.1', 'lang', 'en');
    for (const via of [a, b]) {
      for (const path of ['/app/cookies', '/public/cookies']) {
        const hop = await browser.request(`${via.url}${path}`);
        expect(hop.status, `${via.url}${path}`).toBe(200);
        expect(seenBy(hop)['x-nox-user']).toBe('corp:alice');
        expect(seenBy(hop).cookie, `${via.url}${path}`).toBe('theme=dark; lang=en');
      }
    }
    expect(upstream.seen.some((r) => String(r.headers.cookie ?? '').includes(id))).toBe(false);
  });

  it('serves a session created through one sidecar through the other one', async () => {
    const { browser } = await login('alice', a);
    const hop = await browser.request(`${b.url}/app/elsewhere`);
    expect(hop.status).toBe(200);
    expect(seenBy(hop)['x-nox-user']).toBe('corp:alice');
  });

  it('refreshes an about-to-expire access token once for 20 concurrent requests on two sidecars, logging nobody out', async () => {
    const { browser, id } = await login('bob');
    const before = (await record(id))!;
    const refreshes = op.grants.get('refresh_token') ?? 0;
    // refreshBefore is 4 s of a 6 s token: due after 2 s, still valid until 6 s. The provider
    // and the sidecars run on real time, so the test waits for that moment of the token's life.
    await sleep(Math.max(0, before.accessExpiresAt - 4000 - Date.now()) + 300);
    const burst = await Promise.all(
      Array.from({ length: 20 }, (_, i) => browser.request(`${(i % 2 ? b : a).url}/app/burst/${i}`)),
    );
    expect(burst.map((h) => h.status)).toEqual(Array(20).fill(200));
    expect(new Set(burst.map((h) => seenBy(h)['x-nox-user']))).toEqual(new Set(['corp:bob']));
    await waitUntil(
      'the session record to show the refresh',
      async () => !!(await record(id))?.refreshedAt,
      2000,
      {
        intervalMs: 20,
      },
    );
    const after = (await record(id))!;
    expect(after, 'the session survives its refresh').toBeDefined();
    expect((await browser.request(`${b.url}/app/after-burst`)).status).toBe(200);
    expect(after.accessExpiresAt).toBeGreaterThan(before.accessExpiresAt);
    expect(after.tokens).not.toBe(before.tokens);
    expect((op.grants.get('refresh_token') ?? 0) - refreshes).toBe(1);
    expect(op.grantErrors.get('invalid_grant') ?? 0).toBe(0);
    expect(burst.every((h) => h.setCookies.length === 0)).toBe(true);

    // Once the access token has expired, 20 concurrent requests wait for one refresh.
    await sleep(Math.max(0, after.accessExpiresAt - Date.now()) + 300);
    const late = await Promise.all(
      Array.from({ length: 20 }, (_, i) => browser.request(`${(i % 2 ? b : a).url}/app/late/${i}`)),
    );
    expect(late.map((h) => h.status)).toEqual(Array(20).fill(200));
    expect((op.grants.get('refresh_token') ?? 0) - refreshes).toBe(2);
    expect((await record(id))!.accessExpiresAt).toBeGreaterThan(Date.now());
    expect(op.grantErrors.get('invalid_grant') ?? 0).toBe(0);
    // Each refresh is one session event in the audit log, by the sidecar that made it.
    const refreshed = async () =>
      pgQuery<{ subject: string; sidecar: string }>(
        db,
        "SELECT subject, sidecar FROM audit_session_events WHERE kind = 'refresh' AND session_hash = $1",
        [sessionHash(id)],
      );
    await waitUntil(
      'two refresh events in the audit log',
      async () => (await refreshed()).length >= 2,
      10_000,
    );
    const events = await refreshed();
    expect(events).toHaveLength(2);
    expect(events.every((e) => e.subject === 'corp:bob' && e.sidecar.startsWith('browser-login-'))).toBe(
      true,
    );
  });

  it('logs out only by a POST from this site: a link, another site or a missing token leave the session alone', async () => {
    const { browser, id } = await login('dave');
    const post = (headers: Record<string, string>, query = '') =>
      browser.request(`${a.url}/logout${query}`, { method: 'POST', headers });
    // A link (GET) gets a page whose button posts the logout, with this session's token.
    const page = await browser.request(`${a.url}/logout`);
    expect(page.status).toBe(200);
    expect(page.contentType).toContain('text/html');
    const action = /<form method="post" action="([^"]+)">/.exec(page.body)?.[1]?.replaceAll('&amp;', '&');
    expect(action).toMatch(/^\/logout\?nox_logout=[\w-]{43}$/);
    // An API client's GET: 405, POST is the method.
    const api = await browser.request(`${a.url}/logout`, { headers: { accept: 'application/json' } });
    expect([api.status, bodyOf(api).error]).toEqual([405, 'LOGOUT_METHOD']);
    // Forged from another site (a form there: the browser says so), or without proof.
    for (const [headers, query] of [
      [{ origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' }, ''],
      [{ 'sec-fetch-site': 'same-site' }, action!.slice('/logout'.length)], // a sibling subdomain, with a stolen token
      [{ origin: 'https://evil.example' }, ''],
      [{}, ''],
      [{}, `?nox_logout=${'A'.repeat(43)}`],
    ] as const) {
      const refused = await post({ accept: 'application/json', ...headers }, query);
      expect([refused.status, bodyOf(refused).error], JSON.stringify(headers)).toEqual([
        403,
        'LOGOUT_REFUSED',
      ]);
      expect(refused.setCookies).toEqual([]);
    }
    expect(await record(id)).toBeDefined();
    expect((await browser.request(`${a.url}/app/still-in`)).status).toBe(200);
    // The page's button (token in the action), or a same-origin POST, does it.
    const out = await browser.request(`${a.url}${action}`, { method: 'POST' });
    expect(out.status).toBe(302);
    expect(await record(id)).toBeUndefined();
    const again = await login('dave');
    const sameOrigin = await again.browser.request(`${a.url}/logout`, {
      method: 'POST',
      headers: { origin: a.url, 'sec-fetch-site': 'same-origin' },
    });
    expect(sameOrigin.status).toBe(302);
    expect(await record(again.id)).toBeUndefined();
  });

  it('logs out: the session ends on every sidecar and the browser goes to the provider’s end-session endpoint', async () => {
    const { browser, id } = await login('alice');
    expect((await browser.request(`${b.url}/app/cached`)).status).toBe(200); // b now holds it in its cache
    const out = await browser.request(`${a.url}/logout`, { method: 'POST', headers: { origin: a.url } });
    expect(out.status).toBe(302);
    const end = new URL(out.location!);
    expect(`${end.origin}${end.pathname}`).toBe(`${op.issuer}/session/end`);
    expect(end.searchParams.get('id_token_hint')).toMatch(/^eyJ/);
    expect(end.searchParams.get('post_logout_redirect_uri')).toBe(`${a.url}/bye`);
    expect(end.searchParams.get('client_id')).toBe('web');
    expect(out.setCookies).toEqual([
      '__Host-nox_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax',
    ]);
    expect(await record(id)).toBeUndefined();
    // The old cookie, replayed, is anonymous on both sidecars and gets cleared.
    const thief = new Browser();
    thief.setCookie('127.0.0.1', '__Host-nox_session', id);
    for (const via of [b, a]) {
      const hop = await thief.request(`${via.url}/app/page`);
      expect(hop.status).toBe(302);
      expect(hop.location!.startsWith(`${op.issuer}/auth?`)).toBe(true);
    }
    const pub = await thief.request(`${b.url}/public/x`);
    expect(pub.status).toBe(200);
    expect(pub.setCookies).toEqual([
      '__Host-nox_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax',
    ]);
  });

  it('revokes a session on every sidecar within 1 s (pub/sub drops their cached copies)', async () => {
    const { browser, id } = await login('carol');
    // b reads the session for the first time here and keeps its copy for 1 s (the default cacheMs).
    const warmed = Date.now();
    for (const via of [a, b]) expect((await browser.request(`${via.url}/app/warm`)).status).toBe(200);
    const started = Date.now();
    // From this process, through Redis: the sidecars learn of it only by pub/sub.
    expect(await sessions.revoke(sessionHash(id))).toBe(true);
    const ended: number[] = [];
    for (const via of [b, a]) {
      await waitUntil(
        `${via.url} to refuse the revoked session`,
        async () => (await browser.request(`${via.url}/app/after`)).status !== 200,
        5000,
        { intervalMs: 10 },
      );
      ended.push(Date.now());
    }
    expect(Math.max(...ended) - started).toBeLessThan(1000);
    // b's cached copy would have been served until at least warmed + 1 s: the broadcast ended it sooner.
    expect(ended[0]!).toBeLessThan(warmed + 1000);
  });

  it('offers a chooser page when a route offers several providers', async () => {
    const browser = new Browser();
    const page = await browser.request(`${a.url}/multi/x?y=1`);
    expect(page.status).toBe(200);
    expect(page.contentType).toBe('text/html; charset=utf-8');
    const links = [...page.body.matchAll(/href="([^"]+)"/g)].map((m) => m[1]!.replaceAll('&amp;', '&'));
    // Providers are named by an opaque reference, not by resource name (pages.ts providerRef).
    expect(links).toEqual([
      expect.stringMatching(/^\/oauth2\/callback\?nox_start=1&provider=[\w-]{12}&rd=%2Fmulti%2Fx%3Fy%3D1$/),
      expect.stringMatching(/^\/oauth2\/other\?nox_start=1&provider=[\w-]{12}&rd=%2Fmulti%2Fx%3Fy%3D1$/),
    ]);
    const start = await browser.request(`${a.url}${links[0]}`);
    expect(start.status).toBe(302);
    expect(start.location!.startsWith(`${op.issuer}/auth?`)).toBe(true);
    // The other provider is down: its login fails closed, with a 503.
    expect((await browser.request(`${a.url}${links[1]}`)).status).toBe(503);
  });

  it('refuses a callback with no state, a forged state, a replayed state and a tampered pre-login cookie', async () => {
    const browser = new Browser();
    const reasonOf = (h: Hop) => JSON.parse(h.body) as { error: string; reason: string };
    // The reasons are in the JSON an API client gets; a browser gets a page (browser-pages.test.ts).
    const json = { headers: { accept: 'application/json' } };
    const none = await browser.request(`${a.url}/oauth2/callback?code=abc`, json);
    expect(none.status).toBe(401);
    expect(reasonOf(none)).toMatchObject({ error: 'LOGIN_FAILED', reason: 'the callback carries no state' });
    const forged = await browser.request(`${a.url}/oauth2/callback?code=abc&state=forged`, json);
    expect(forged.status).toBe(401);
    expect(reasonOf(forged).reason).toMatch(/no pre-login cookie/);

    const { browser: victim, hops } = await login('alice');
    const callback = hops.find((h) => h.url.startsWith(`${a.url}/oauth2/callback?`))!;
    const replay = await victim.request(callback.url, json);
    expect(replay.status).toBe(401);
    expect(reasonOf(replay).reason).toMatch(/already used/);

    const tamperer = new Browser();
    op.user = 'alice';
    const first = await tamperer.request(`${a.url}/app/page`);
    const jar = tamperer.jar.get('127.0.0.1')!;
    const [name, pending] = [...jar].find(([n]) => n.startsWith('__Secure-nox_session_login_'))!;
    const flipped =
      pending.value.slice(0, -2) + (pending.value.at(-2) === 'A' ? 'B' : 'A') + pending.value.at(-1);
    jar.set(name, { ...pending, value: flipped });
    const rest = await tamperer.navigate(first.location!);
    expect(rest.at(-1)!.status).toBe(401);
    // Refused before the state is spent: the same callback again, as an API client, says why.
    expect(reasonOf(await tamperer.request(rest.at(-1)!.url, json)).reason).toMatch(/tampered/);
    expect(tamperer.cookie('127.0.0.1', '__Host-nox_session')).toBeUndefined();
  });

  it('never let a Nox cookie through to the upstream, on any request of this file', () => {
    expect(upstream.seen.length).toBeGreaterThan(50);
    const leaked = upstream.seen.filter((r) =>
      /(^|;\s*)(__Host-|__Secure-)?nox_session/.test(String(r.headers.cookie ?? '')),
    );
    expect(leaked.map((r) => `${r.url}: ${String(r.headers.cookie)}`)).toEqual([]);
  });
});
