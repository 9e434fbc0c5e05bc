import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { RedisSessionStore } from '../../sidecar/login/redisSessionStore.js';
import { Keyring, parseKeys } from '../../sidecar/login/seal.js';
import { type SessionRecord, sessionHash } from '../../sidecar/login/sessionStore.js';
import { Browser, type Hop } from '../harness/browser.js';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { type LoginOp, startLoginOp } from '../harness/oidcLogin.js';
import { rawRequest } from '../harness/pathUpstreams.js';
import { writeSecret } from '../harness/policies.js';
import { freePorts } from '../harness/ports.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { echoedHeaders, startUpstream, type Upstream } from '../harness/upstream.js';

// Bad input at the browser login, through real Envoy and the built sidecar, against a real
// OpenID provider, with sessions in a real Redis. Every case must end in a deny whose body
// says why, must never create a session, and must leave the sidecar healthy (afterEach).
//
// Already asserted in browser-login.test.ts, and not repeated here:
// - a callback with no state, with a forged state and no pre-login cookie, a replayed
//   callback (sequential) and a tampered pre-login cookie: "refuses a callback with no
//   state, a forged state, a replayed state and a tampered pre-login cookie";
// - a session ended by logout, its cookie replayed: "logs out: …";
// - a session revoked through the store reaching every sidecar within 1 s: "revokes a session …".
// Below are the variants those leave open: a real code without the pre-login cookie, an
// expired pre-login cookie, concurrent replays, a forged state next to a genuine cookie,
// tampered and expired session cookies, and what a revoked session's cookie gets back.

function policy(issuer: string): string {
  const provider = (name: string, callbackPath: string, sessionTTL: string, cookie: string) => `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: ${name} }
spec:
  type: oidc
  issuer: ${issuer}
  clientId: web
  clientSecretRef: { name: corp-oidc, key: client-secret }
  scopes: [openid, email, profile, groups]
  login:
    enabled: true
    callbackPath: ${callbackPath}
    sessionTTL: ${sessionTTL}
    cookie: { name: ${cookie}, sameSite: Lax }
    encryptionKeySecretRef: { name: corp-session, key: session-key }
`;
  const route = (name: string, prefix: string, p: string) => `
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: ${name} }
spec:
  match: { paths: [{ type: Prefix, value: ${prefix} }] }
  providers: [${p}]
  login: { providers: [${p}] }
  rules:
    - { name: staff, action: Allow, when: { groups: [staff] } }
  defaultAction: Deny
`;
  // "brief": the same provider with three-second sessions, to see one expire.
  return [
    provider('corp', '/oauth2/callback', '1h', 'nox_session'),
    provider('brief', '/oauth2/brief', '3s', 'nox_brief'),
    route('app', '/app', 'corp'),
    route('brief', '/brief', 'brief'),
  ].join('---');
}

interface Body {
  error: string;
  reason: string;
  decisionId: string;
}
const bodyOf = (h: Hop) => JSON.parse(h.body) as Body;
const apiHeaders = { accept: 'application/json' };

describe('bad input at the browser login, through real Envoy', () => {
  let op: LoginOp;
  let redis: RedisServer;
  let raw: Redis;
  let sessions: RedisSessionStore;
  let upstream: Upstream;
  let sidecar: Sidecar;
  let envoy: Envoy;
  let origin: string;
  /** The keyring behind the session-key Secret: the test wrote the Secret, so it holds the key. */
  let keyring: Keyring;

  beforeAll(async () => {
    const [port] = await freePorts(1);
    origin = `http://127.0.0.1:${port}`;
    op = await startLoginOp({
      clients: [
        {
          clientId: 'web',
          secret: 'web-secret',
          redirectUris: [`${origin}/oauth2/callback`, `${origin}/oauth2/brief`],
        },
      ],
      users: { alice: { groups: ['staff'] }, mallory: { groups: ['staff'] } },
    });
    redis = await startRedis({ appendonly: false });
    raw = new Redis({ host: redis.host, port: redis.port });
    sessions = new RedisSessionStore({
      nodes: [{ host: redis.host, port: redis.port }],
      cluster: false,
      timeoutMs: 500,
      log: createLogger('login-bad-input-test', { level: 'warn' }),
    });
    await sessions.ready();
    const sessionKey = randomBytes(32).toString('base64');
    keyring = new Keyring(parseKeys(Buffer.from(sessionKey)));
    const secretsDir = scratchDir('login-bad-secrets');
    writeSecret(secretsDir, 'default', 'corp-oidc', { 'client-secret': 'web-secret' });
    writeSecret(secretsDir, 'default', 'corp-session', { 'session-key': sessionKey });
    const policyPath = join(scratchDir('login-bad-policy'), 'policy.yaml');
    writeFileSync(policyPath, policy(op.issuer));
    upstream = await startUpstream();
    sidecar = await startSidecar({
      policyPath,
      env: {
        NOX_SECRETS_DIR: secretsDir,
        NOX_SESSION_STORE: 'redis',
        NOX_REDIS_NODES: `${redis.host}:${redis.port}`,
        NOX_SESSION_TIMEOUT_MS: '500',
        // A code exchange is a round trip to the provider inside the check.
        NOX_CHECK_DEADLINE_MS: '2500',
      },
    });
    envoy = await startEnvoy({
      authzPort: sidecar.grpcPort,
      upstreamPort: upstream.port,
      listenPort: port,
      authzTimeoutMs: 3000,
      // As examples/gateways/envoy.yaml: the callbacks get the login's budget, not the check's.
      loginCallbackPaths: ['/oauth2/callback', '/oauth2/brief'],
      loginTimeoutMs: 6000,
    });
  });
  afterAll(async () => {
    await envoy?.stop();
    await sidecar?.stop();
    await sessions?.close();
    raw?.disconnect();
    await upstream?.close();
    await redis?.stop();
    await op?.close();
  });

  // After every case: the sidecar is live and ready, and a whole login still works through it.
  afterEach(async () => {
    expect(sidecar.service.exited()).toBe(false);
    for (const probe of ['/healthz', '/readyz'])
      expect((await fetch(`http://127.0.0.1:${sidecar.httpPort}${probe}`)).status, probe).toBe(200);
    const { browser } = await login('alice');
    const page = await browser.request(`${origin}/app/after-bad-input`);
    expect(page.status).toBe(200);
    expect(seenBy(page)['x-nox-user']).toBe('corp:alice');
  });

  const seenBy = (hop: Hop) => echoedHeaders(hop.body);

  /** A full login: the browser ends on the page it asked for, with its session cookie. */
  async function login(user: string, path = '/app/page', cookie = '__Host-nox_session') {
    op.user = user;
    const browser = new Browser();
    const hops = await browser.navigate(`${origin}${path}`);
    expect(hops.at(-1)!.status, hops.map((h) => `${h.status} ${h.url}`).join('\n')).toBe(200);
    return { browser, id: browser.cookie('127.0.0.1', cookie)! };
  }

  /**
   * A login up to the provider's redirect back: the browser holds the pre-login cookie, the
   * callback URL holds a real code and state, and the callback has not been requested.
   * `beforeProvider` may change the browser's cookies after Nox set them.
   */
  async function toCallback(user: string, beforeProvider?: (b: Browser, start: Hop) => void) {
    op.user = user;
    const browser = new Browser();
    const start = await browser.request(`${origin}/app/page`);
    expect(start.status).toBe(302);
    beforeProvider?.(browser, start);
    let next = start.location!;
    for (let i = 0; !next.startsWith(`${origin}/oauth2/callback?`); i++) {
      if (i > 10) throw new Error(`no callback after 10 hops at the provider (last: ${next})`);
      const hop = await browser.request(next);
      expect(hop.status, hop.url).toBeGreaterThanOrEqual(300);
      next = hop.location!;
    }
    return { browser, callback: next };
  }

  const preLoginCookie = (b: Browser) =>
    [...b.jar.get('127.0.0.1')!].find(([n]) => n.startsWith('__Secure-nox_session_login_'))!;
  const sessionCount = async () => (await raw.keys('nox:s:{*}')).filter((k) => !k.endsWith(':lock')).length;
  const codeExchanges = () => op.grants.get('authorization_code') ?? 0;
  const failedLogins = async () => {
    const text = await (await fetch(`http://127.0.0.1:${sidecar.httpPort}/metrics`)).text();
    return text
      .split('\n')
      .filter((l) => /^nox_logins_total\{.*result="failed".*\} /.test(l))
      .reduce((a, l) => a + Number(l.split(' ').at(-1)), 0);
  };

  /** A callback that must fail: 401 LOGIN_FAILED with this reason, no session, no code exchange. */
  async function expectRefused(browser: Browser, url: string, reason: RegExp): Promise<Hop> {
    const [exchanges, stored, failed] = [codeExchanges(), await sessionCount(), await failedLogins()];
    // As an API client: the JSON says why (a browser gets a page instead, browser-pages.test.ts).
    const hop = await browser.request(url, { headers: apiHeaders });
    expect(hop.status, hop.body).toBe(401);
    expect(bodyOf(hop)).toMatchObject({ error: 'LOGIN_FAILED', reason: expect.stringMatching(reason) });
    expect(bodyOf(hop).decisionId).toBeTruthy();
    expect(hop.setCookies.filter((c) => c.startsWith('__Host-nox_session='))).toEqual([]);
    expect(codeExchanges()).toBe(exchanges);
    expect(await sessionCount()).toBe(stored);
    expect(await failedLogins()).toBe(failed + 1);
    return hop;
  }

  it("logs in only on the hosts the login is bound to: another Host gets no redirect naming it, and its callback path is not Nox's", async () => {
    // No policy here lists hosts, so the login is bound to loopback hosts only (loginHosts.ts).
    const port = Number(new URL(origin).port);
    const browser = { accept: 'text/html' };
    const keysBefore = await raw.dbsize();
    const home = await rawRequest(port, 'GET', '/app/page', { ...browser, host: `127.0.0.1:${port}` });
    expect(home.status).toBe(302);
    expect(new URL(home.headers.location!).searchParams.get('redirect_uri')).toBe(
      `${origin}/oauth2/callback`,
    );
    for (const host of ['evil.example', `evil.example:${port}`, 'app.example.com']) {
      const page = await rawRequest(port, 'GET', '/app/page', { ...browser, host });
      expect(page.status, host).toBe(403);
      expect(page.headers.location, host).toBeUndefined();
      expect(page.headers['set-cookie'], host).toBeUndefined();
      const callback = await rawRequest(port, 'GET', '/oauth2/callback?state=x&code=y', { ...browser, host });
      expect(callback.status, host).toBe(403);
      expect(callback.headers['x-nox-error'], host).not.toBe('LOGIN_FAILED');
      expect(callback.headers['set-cookie'], host).toBeUndefined();
    }
    expect(await raw.dbsize()).toBe(keysBefore); // no session, no lock, nothing in the store
  });

  it('gives a login callback its own budget: a provider slower than the check deadline still completes the login', async () => {
    // Past NOX_CHECK_DEADLINE_MS (2.5 s) and Envoy's ext_authz timeout (3 s), within the
    // login's NOX_LOGIN_DEADLINE_MS (5 s) and the callback route's timeout (6 s).
    op.tokenDelayMs = 3000;
    try {
      const { browser } = await login('alice', '/app/slow-provider');
      const page = await browser.request(`${origin}/app/slow-provider`);
      expect(page.status).toBe(200);
      expect(seenBy(page)['x-nox-user']).toBe('corp:alice');
    } finally {
      op.tokenDelayMs = 0;
    }
  });

  it('never completes a login from a callback without the pre-login cookie, even with a real code and state', async () => {
    // The victim's browser got a real code from the provider; the callback URL is replayed
    // from another browser (leaked URL, login CSRF). That browser has no pre-login cookie,
    // so no PKCE verifier or nonce: the code is never even sent to the provider.
    const { browser: victim, callback } = await toCallback('alice');
    await expectRefused(new Browser(), callback, /^no pre-login cookie matches the state/);
    // Refusing it spent nothing: the browser that started the login still completes it.
    const done = await victim.request(callback);
    expect(done.status).toBe(302);
    expect(done.location).toBe(`${origin}/app/page`);
    expect(done.setCookies[0]).toMatch(/^__Host-nox_session=[\w-]{43}; /);
  });

  it('refuses a callback whose pre-login cookie has expired', async () => {
    // The pre-login TTL is a constant 10 minutes (authorize.ts pendingTtlMs), not a setting,
    // so instead of waiting it out the test re-seals the browser's own pre-login record with
    // an expiry in the past, under the session key it put in the Secret: a browser that
    // kept the cookie past its Max-Age (or a clock running ahead) sends exactly this.
    const { browser, callback } = await toCallback('alice', (b) => {
      const [name, cookie] = preLoginCookie(b);
      const pending = JSON.parse(keyring.open('pre-login', cookie.value, name)!) as { expiresAt: number };
      expect(pending.expiresAt).toBeGreaterThan(Date.now() + 9 * 60_000);
      const expired = JSON.stringify({ ...pending, expiresAt: Date.now() - 1000 });
      b.jar.get('127.0.0.1')!.set(name, { ...cookie, value: keyring.seal('pre-login', expired, name) });
    });
    await expectRefused(browser, callback, /^the pre-login cookie has expired/);
  });

  it('completes a callback replayed concurrently exactly once', async () => {
    // The sequential replay is in browser-login.test.ts; here five copies race, so the
    // single-use check must hold across concurrent checks, not only after a finished one.
    const { browser, callback } = await toCallback('alice');
    const [exchanges, stored] = [codeExchanges(), await sessionCount()];
    const hops = await Promise.all(
      Array.from({ length: 5 }, () => browser.request(callback, { headers: apiHeaders })),
    );
    const done = hops.filter((h) => h.status === 302);
    const refused = hops.filter((h) => h.status !== 302);
    expect(done).toHaveLength(1);
    expect(done[0]!.setCookies[0]).toMatch(/^__Host-nox_session=[\w-]{43}; /);
    expect(refused.map((h) => h.status)).toEqual([401, 401, 401, 401]);
    for (const h of refused)
      expect(bodyOf(h)).toMatchObject({
        error: 'LOGIN_FAILED',
        reason: expect.stringMatching(/already used/),
      });
    expect(codeExchanges()).toBe(exchanges + 1);
    expect(await sessionCount()).toBe(stored + 1);
  });

  it('refuses a forged state next to a genuine pre-login cookie, however the cookie is renamed', async () => {
    // (No pre-login cookie at all is in browser-login.test.ts.)
    const { browser, callback } = await toCallback('alice');
    const forged = new URL(callback);
    forged.searchParams.set('state', 'attacker-chosen-state');
    // The genuine cookie is named after the genuine state: the forged one finds none.
    await expectRefused(browser, forged.href, /^no pre-login cookie matches the state/);

    // Renamed to the forged state's cookie name, the genuine sealed record does not open:
    // the seal binds it to its name, hence to its state.
    const [name, cookie] = preLoginCookie(browser);
    const nameFor = (state: string) =>
      `__Secure-nox_session_login_${createHash('sha256').update(state).digest('base64url').slice(0, 12)}`;
    const renamed = new Browser();
    renamed.jar.set('127.0.0.1', new Map([[nameFor('attacker-chosen-state'), cookie]]));
    await expectRefused(renamed, forged.href, /^the pre-login cookie is tampered with/);

    // A record sealed under the right name but for another state (a name-hash collision,
    // crafted here with the key) is caught by comparing the sealed state itself.
    const pending = JSON.parse(keyring.open('pre-login', cookie.value, name)!) as Record<string, unknown>;
    const collided = new Browser();
    const target = nameFor('attacker-chosen-state');
    collided.jar.set(
      '127.0.0.1',
      new Map([[target, { ...cookie, value: keyring.seal('pre-login', JSON.stringify(pending), target) }]]),
    );
    await expectRefused(collided, forged.href, /^the state does not match the pre-login cookie/);

    // None of it spent the genuine login.
    expect((await browser.request(callback)).status).toBe(302);
  });

  /**
   * A session cookie that names no live session: the caller is anonymous. An API client
   * gets a 401 saying why, with the cookie cleared; a browser is sent to log in again.
   * Neither reaches the upstream.
   */
  async function expectAnonymous(id: string, cookie = '__Host-nox_session', path = '/app/page') {
    const seen = upstream.seen.length;
    const api = new Browser();
    api.setCookie('127.0.0.1', cookie, id);
    const denied = await api.request(`${origin}${path}`, { headers: apiHeaders });
    expect(denied.status, denied.body).toBe(401);
    expect(bodyOf(denied)).toMatchObject({
      error: 'UNAUTHENTICATED',
      reason: expect.stringMatching(/^denied by AccessPolicy .*; log in or send a bearer token$/),
    });
    expect(denied.setCookies).toEqual([`${cookie}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax`]);
    const browser = new Browser();
    browser.setCookie('127.0.0.1', cookie, id);
    const redirected = await browser.request(`${origin}${path}`);
    expect(redirected.status).toBe(302);
    expect(redirected.location!.startsWith(`${op.issuer}/auth?`)).toBe(true);
    expect(bodyOf(redirected)).toMatchObject({
      error: 'LOGIN_REDIRECT',
      reason: expect.stringMatching(/^login required: sent to default\//),
    });
    expect(upstream.seen.length).toBe(seen);
  }

  it('treats a tampered session cookie as no session, and leaves the real one alone', async () => {
    const { browser, id } = await login('alice');
    for (const tampered of [
      `${id.slice(0, 10)}${id[10] === 'A' ? 'B' : 'A'}${id.slice(11)}`, // well-formed, one character off
      id.slice(0, 42), // truncated
      `${id}A`, // too long
      `${id.slice(0, 42)}.`, // not base64url
      sessionHash(id), // the store's key for it, not the id
      '', // empty
    ]) {
      await expectAnonymous(tampered);
    }
    // The genuine session was not touched by any of it.
    expect((await browser.request(`${origin}/app/still-mine`)).status).toBe(200);
  });

  it('ends an expired session: past its TTL, and with a record the store still holds', async () => {
    // sessionTTL 3s: the browser would drop the cookie itself (Max-Age=3); sent anyway, the
    // session is gone from the store, and the sidecar's copy never outlives it either.
    const { browser, id } = await login('alice', '/brief/page', '__Host-nox_brief');
    expect((await browser.request(`${origin}/brief/again`)).status).toBe(200);
    const record = JSON.parse((await raw.get(`nox:s:{${sessionHash(id)}}`))!) as SessionRecord;
    // The signal: the store has expired the session (and its expiry time has passed).
    await waitUntil(
      'the store to expire the session',
      async () => Date.now() > record.expiresAt && (await raw.exists(`nox:s:{${sessionHash(id)}}`)) === 0,
      10_000,
      { intervalMs: 50 },
    );
    await expectAnonymous(id, '__Host-nox_brief', '/brief/page');

    // A record past its expiresAt that the store still returns (a key TTL extended by
    // hand, a store without expiry): the sidecar checks the record's own expiry. Written
    // before the browser's first request, so no sidecar holds a cached copy.
    const fresh = await toCallback('alice');
    const done = await fresh.browser.request(fresh.callback);
    const freshId = fresh.browser.cookie('127.0.0.1', '__Host-nox_session')!;
    expect(done.status).toBe(302);
    const key = `nox:s:{${sessionHash(freshId)}}`;
    const live = JSON.parse((await raw.get(key))!) as SessionRecord;
    const stale: SessionRecord = { ...live, expiresAt: Date.now() - 1000 };
    expect(await raw.set(key, JSON.stringify(stale), 'KEEPTTL')).toBe('OK');
    expect(Number(await raw.pttl(key))).toBeGreaterThan(3_000_000);
    await expectAnonymous(freshId);
  });

  it('answers a revoked session’s cookie as no session', async () => {
    // Revocation reaching every sidecar, and by logout, are in browser-login.test.ts; here,
    // what the cookie gets back once revoked, right after the sidecar has cached the session.
    const { browser, id } = await login('mallory');
    expect((await browser.request(`${origin}/app/cached`)).status).toBe(200);
    expect(await sessions.revoke(sessionHash(id))).toBe(true);
    // Pub/sub is asynchronous: the sidecar drops its copy within moments.
    await waitUntil(
      'the sidecar to drop its copy',
      async () => (await browser.request(`${origin}/app/poll`)).status !== 200,
      1000,
      { intervalMs: 10 },
    );
    await expectAnonymous(id);
    expect(await raw.exists(`nox:s:{${sessionHash(id)}}`)).toBe(0);
  });
});
