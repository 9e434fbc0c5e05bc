import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BrowserContext, Browser as Chromium, Page, Response } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, type Hop } from '../harness/browser.js';
import { screenshot, startChromium } from '../harness/chromium.js';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { type LoginOp, startLoginOp } from '../harness/oidcLogin.js';
import { writeSecret } from '../harness/policies.js';
import { freePort } from '../harness/ports.js';
import { scratchDir } from '../harness/process.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { startUpstream, type Upstream } from '../harness/upstream.js';

// Names a person must never see: the namespace and every resource name of this file.
const internalNames = [
  'team-zeta',
  'idp-zeta-corp',
  'idp-zeta-partners',
  'pol-zeta-app',
  'pol-zeta-multi',
  'pol-zeta-admin',
  'zeta-oidc',
  'zeta-session',
];

const logo =
  'data:image/svg+xml;base64,' +
  Buffer.from(
    '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="32"><rect width="32" height="32" rx="6" fill="#6d28d9"/><text x="40" y="23" font-family="sans-serif" font-size="18" fill="#6d28d9">Acme</text></svg>',
  ).toString('base64');

function policies(issuer: string): string {
  const provider = (name: string, clientId: string, displayName: string, callbackPath: string) => `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: ${name}, namespace: team-zeta }
spec:
  type: oidc
  displayName: ${displayName}
  issuer: ${issuer}
  clientId: ${clientId}
  clientSecretRef: { name: zeta-oidc, key: ${clientId} }
  scopes: [openid, email, profile, groups]
  login:
    enabled: true
    callbackPath: ${callbackPath}
    sessionTTL: 1h
    cookie: { name: nox_session, sameSite: Lax }
    encryptionKeySecretRef: { name: zeta-session, key: session-key }
---`;
  return `${provider('idp-zeta-corp', 'web', 'Zeta Corporate SSO', '/oauth2/callback')}
${provider('idp-zeta-partners', 'partners', 'Partner Accounts', '/oauth2/partners')}
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: pol-zeta-app, namespace: team-zeta }
spec:
  match: { paths: [{ type: Prefix, value: /app }] }
  providers: [idp-zeta-corp, idp-zeta-partners]
  login: { providers: [idp-zeta-corp] }
  rules:
    - { name: staff, action: Allow, when: { groups: [staff] } }
  defaultAction: Deny
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: pol-zeta-multi, namespace: team-zeta }
spec:
  match: { paths: [{ type: Prefix, value: /multi }] }
  providers: [idp-zeta-corp, idp-zeta-partners]
  login: { providers: [idp-zeta-corp, idp-zeta-partners] }
  rules:
    - { name: staff, action: Allow, when: { groups: [staff] } }
  defaultAction: Deny
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: pol-zeta-admin, namespace: team-zeta }
spec:
  match: { paths: [{ type: Prefix, value: /admin }] }
  providers: [idp-zeta-corp]
  login: { providers: [idp-zeta-corp] }
  rules:
    - { name: admins-only, action: Allow, when: { groups: [admins] } }
  defaultAction: Deny
`;
}

const apiHeaders = { accept: 'application/json' };
const jsonOf = (h: Hop) => JSON.parse(h.body) as { error: string; reason: string; decisionId: string };

// What a person sees from Nox, in real headless Chromium (Debian's, driven by playwright-core)
// through real Envoy and nox-authz, logging in at a real OpenID provider; sessions in Redis.
// Each page is screenshotted to .run/screenshots/browser-pages-*.png.
describe('pages a person sees, in headless Chromium through real Envoy', () => {
  let op: LoginOp;
  let redis: RedisServer;
  let upstream: Upstream;
  let sidecar: Sidecar;
  let envoy: Envoy;
  let chromium: Chromium;
  let origin: string;

  beforeAll(async () => {
    const port = await freePort();
    origin = `http://127.0.0.1:${port}`;
    op = await startLoginOp({
      clients: [
        { clientId: 'web', secret: 'web-secret', redirectUris: [`${origin}/oauth2/callback`] },
        { clientId: 'partners', secret: 'partners-secret', redirectUris: [`${origin}/oauth2/partners`] },
      ],
      users: { alice: { groups: ['staff'] } },
    });
    redis = await startRedis({ appendonly: false });
    const secretsDir = scratchDir('pages-secrets');
    writeSecret(secretsDir, 'team-zeta', 'zeta-oidc', { web: 'web-secret', partners: 'partners-secret' });
    writeSecret(secretsDir, 'team-zeta', 'zeta-session', {
      'session-key': randomBytes(32).toString('base64'),
    });
    const policyPath = join(scratchDir('pages-policy'), 'policy.yaml');
    writeFileSync(policyPath, policies(op.issuer));
    upstream = await startUpstream();
    sidecar = await startSidecar({
      policyPath,
      env: {
        NOX_SECRETS_DIR: secretsDir,
        NOX_SESSION_STORE: 'redis',
        NOX_REDIS_NODES: `${redis.host}:${redis.port}`,
        NOX_SESSION_TIMEOUT_MS: '500',
        NOX_CHECK_DEADLINE_MS: '2500',
        NOX_LOGIN_TITLE: 'Acme Portal',
        NOX_LOGIN_LOGO_URL: logo,
        NOX_LOGIN_DEFAULT_PATH: '/app/home',
      },
    });
    envoy = await startEnvoy({
      authzPort: sidecar.grpcPort,
      upstreamPort: upstream.port,
      listenPort: port,
      authzTimeoutMs: 3000,
    });
    chromium = await startChromium();
  });
  afterAll(async () => {
    await chromium?.close();
    await envoy?.stop();
    await sidecar?.stop();
    await upstream?.close();
    await redis?.stop();
    await op?.close();
  });

  /** A fresh browser profile (no cookies) with one tab. */
  async function tab(): Promise<{ context: BrowserContext; page: Page }> {
    const context = await chromium.newContext({ viewport: { width: 800, height: 640 } });
    return { context, page: await context.newPage() };
  }

  /** What a person reads, the page's HTML, and the headers it came with. */
  async function seen(page: Page, response: Response | null) {
    expect(response, 'a main-frame response').not.toBeNull();
    return {
      status: response!.status(),
      headers: response!.headers(),
      text: await page.locator('body').textContent(),
      html: await page.content(),
      raw: await response!.text(),
      links: await page
        .locator('a')
        .evaluateAll((as) =>
          as.map((a) => ({ text: a.textContent ?? '', href: a.getAttribute('href') ?? '' })),
        ),
    };
  }

  /** Nothing internal on the page, and the headers every Nox page carries. */
  function expectCleanPage(p: Awaited<ReturnType<typeof seen>>): void {
    for (const name of internalNames) {
      expect(p.raw, name).not.toContain(name);
      expect(p.text, name).not.toContain(name);
    }
    // No reason, rule or code words from the JSON either.
    expect(p.raw).not.toMatch(/AccessPolicy|OAuth2Provider|LOGIN_FAILED|ACCESS_DENIED|NO_POLICY|reason/);
    expect(p.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(p.headers['cache-control']).toBe('no-store');
    expect(p.headers['x-content-type-options']).toBe('nosniff');
    const csp = p.headers['content-security-policy'] ?? '';
    expect(csp).toMatch(/^default-src 'none'; style-src 'sha256-[A-Za-z0-9+/=]+'; img-src data:; /);
    expect(csp).toContain("frame-ancestors 'none'");
    expect(p.raw).not.toMatch(/<script/i);
    // The operator's title and logo; the logo loads under the page's own CSP.
    expect(p.text).toContain('Acme Portal');
  }

  async function logoLoaded(page: Page): Promise<boolean> {
    return page
      .locator('img.logo')
      .evaluate((img) => (img as unknown as { naturalWidth: number }).naturalWidth > 0);
  }

  /** Logs alice in at /app/page in this tab; returns the callback URL the provider sent her to. */
  async function loginIn(page: Page, path = '/app/page'): Promise<string> {
    op.user = 'alice';
    let callback = '';
    page.on('request', (r) => {
      if (r.url().startsWith(`${origin}/oauth2/callback?`)) callback = r.url();
    });
    const res = await page.goto(`${origin}${path}`);
    expect(res!.status()).toBe(200);
    expect(page.url()).toBe(`${origin}${path}`);
    expect(callback).not.toBe('');
    return callback;
  }

  it('shows a chooser with the providers’ display names, the title and the logo, and logs in with the one picked', async () => {
    const { context, page } = await tab();
    const p = await seen(page, await page.goto(`${origin}/multi/report?y=1`));
    expect(p.status).toBe(200);
    expect(await page.locator('h1').textContent()).toBe('Sign in to Acme Portal');
    expect(p.links.map((l) => l.text)).toEqual([
      'Sign in with Zeta Corporate SSO',
      'Sign in with Partner Accounts',
    ]);
    expect(await logoLoaded(page)).toBe(true);
    expectCleanPage(p);
    await screenshot(page, 'browser-pages-chooser');

    // The second button logs in with that provider and comes back to the page asked for.
    op.user = 'alice';
    await page.getByRole('link', { name: 'Sign in with Partner Accounts' }).click();
    await page.waitForURL(`${origin}/multi/report?y=1`);
    expect(await page.locator('body').textContent()).toContain('"x-nox-user":"idp-zeta-partners:alice"');
    await context.close();

    // An API client on the same route still gets today's JSON (a 401 challenge, no page).
    const api = await new Browser().request(`${origin}/multi/report`, { headers: apiHeaders });
    expect(api.status).toBe(401);
    expect(api.contentType).toBe('application/json');
    expect(jsonOf(api)).toMatchObject({ error: 'UNAUTHENTICATED' });
  });

  it('says the sign-in was cancelled when consent is denied at the provider, with a retry link to the page asked for', async () => {
    const { context, page } = await tab();
    op.denyConsent = true;
    try {
      const p = await seen(page, await page.goto(`${origin}/app/reports?month=5`));
      const landed = new URL(page.url());
      expect(`${landed.origin}${landed.pathname}`).toBe(`${origin}/oauth2/callback`);
      expect(landed.searchParams.get('error')).toBe('access_denied');
      expect(p.status).toBe(401);
      expect(await page.locator('h1').textContent()).toBe('Sign-in was cancelled');
      expect(p.text).toMatch(/access was not granted/);
      expect(p.text).toMatch(/Reference: [0-9a-f]{12}/);
      expect(p.links).toEqual([{ text: 'Try again', href: '/app/reports?month=5' }]);
      expect(await logoLoaded(page)).toBe(true);
      expectCleanPage(p);
      await screenshot(page, 'browser-pages-consent-denied');

      // An API client that lets itself be sent to log in but prefers JSON reads the reason.
      const client = new Browser('text/html;q=0.5, application/json');
      const hops = await client.navigate(`${origin}/app/reports`);
      const last = hops.at(-1)!;
      expect(last.status).toBe(401);
      expect(last.contentType).toBe('application/json');
      expect(jsonOf(last)).toMatchObject({
        error: 'LOGIN_FAILED',
        reason: expect.stringMatching(
          /^login at team-zeta\/idp-zeta-corp failed: the provider answered access_denied/,
        ),
      });
    } finally {
      op.denyConsent = false;
    }
    // Retry, once the person agrees: the link starts the login again and lands on the page.
    await page.getByRole('link', { name: 'Try again' }).click();
    await page.waitForURL(`${origin}/app/reports?month=5`);
    expect(await page.locator('body').textContent()).toContain('"x-nox-user":"idp-zeta-corp:alice"');
    await context.close();
  });

  it('explains a replayed callback and continues to the page for a browser already signed in', async () => {
    const { context, page } = await tab();
    const callback = await loginIn(page, '/app/inbox');
    const p = await seen(page, await page.goto(callback));
    expect(p.status).toBe(401);
    expect(await page.locator('h1').textContent()).toBe('This sign-in was already used');
    expect(p.links).toEqual([{ text: 'Continue', href: '/app/inbox' }]);
    expectCleanPage(p);
    await screenshot(page, 'browser-pages-replayed-callback');
    await page.getByRole('link', { name: 'Continue' }).click();
    await page.waitForURL(`${origin}/app/inbox`);
    expect(await page.locator('body').textContent()).toContain('"x-nox-user":"idp-zeta-corp:alice"');

    // The same replay from an API client: the JSON, with the reason.
    const cookies = await context.cookies(callback);
    const api = await fetch(callback, {
      headers: { ...apiHeaders, cookie: cookies.map((c) => `${c.name}=${c.value}`).join('; ') },
      redirect: 'manual',
    });
    expect(api.status).toBe(401);
    expect(await api.json()).toMatchObject({
      error: 'LOGIN_FAILED',
      reason: expect.stringMatching(/already used/),
    });
    await context.close();
  });

  it('completes a double-submitted callback once and explains the second to the person', async () => {
    // Up to the provider's redirect back, with the test's HTTP client (Playwright cannot hold a
    // redirect's target): then the pre-login cookie goes into Chromium, which sends the
    // callback from two tabs at once, as a double click or a resubmitted form does.
    op.user = 'alice';
    const http = new Browser();
    let next = (await http.request(`${origin}/app/orders`)).location!;
    for (let i = 0; !next.startsWith(`${origin}/oauth2/callback?`); i++) {
      if (i > 10) throw new Error(`no callback after 10 hops at the provider (last: ${next})`);
      next = (await http.request(next)).location!;
    }
    const callback = next;
    const [name, pending] = [...http.jar.get('127.0.0.1')!].find(([n]) =>
      n.startsWith('__Secure-nox_session_login_'),
    )!;
    const { context, page } = await tab();
    await context.addCookies([
      {
        name,
        value: pending.value,
        domain: '127.0.0.1',
        path: '/oauth2/callback',
        httpOnly: true,
        secure: true,
        sameSite: 'Lax',
      },
    ]);
    const [one, two] = [page, await context.newPage()];
    const responses = await Promise.all([one.goto(callback), two.goto(callback)]);
    expect(responses.map((r) => r!.status()).sort()).toEqual([200, 401]);
    const lost = responses[0]!.status() === 401 ? 0 : 1;
    const loser = [one, two][lost]!;
    const p = await seen(loser, responses[lost]!);
    expect(await loser.locator('h1').textContent()).toBe('This sign-in was already used');
    expect(p.links).toEqual([{ text: 'Continue', href: '/app/orders' }]);
    expectCleanPage(p);
    await screenshot(loser, 'browser-pages-double-submit');
    // The winner's session is this browser's: Continue opens the page.
    await loser.getByRole('link', { name: 'Continue' }).click();
    await loser.waitForURL(`${origin}/app/orders`);
    expect(await loser.locator('body').textContent()).toContain('"x-nox-user":"idp-zeta-corp:alice"');
    await context.close();
  });

  it('sends a rejected or missing return URL to the configured default page, never to another site', async () => {
    const chooser = await new Browser().request(`${origin}/multi/x`);
    const start = [...chooser.body.matchAll(/href="([^"]+)"/g)].map((m) =>
      m[1]!.replaceAll('&amp;', '&'),
    )[0]!;
    expect(start).toMatch(/^\/oauth2\/callback\?nox_start=1&provider=[\w-]{12}&rd=%2Fmulti%2Fx$/);
    for (const [i, rd] of [
      'https://evil.example/steal',
      '//evil.example/steal',
      '/\\evil.example',
      undefined,
    ].entries()) {
      const { context, page } = await tab();
      op.user = 'alice';
      const url = new URL(start, origin);
      if (rd === undefined) url.searchParams.delete('rd');
      else url.searchParams.set('rd', rd);
      const res = await page.goto(url.href);
      expect(res!.status(), String(rd)).toBe(200);
      expect(page.url(), String(rd)).toBe(`${origin}/app/home`);
      expect(await page.locator('body').textContent()).toContain('"url":"/app/home"');
      if (i === 0) await screenshot(page, 'browser-pages-rejected-return-url');
      await context.close();
    }
    expect(upstream.seen.some((r) => r.url.includes('evil'))).toBe(false);
  });

  it('explains a denied page and an unknown address without naming policies, and keeps the JSON for API clients', async () => {
    const { context, page } = await tab();
    await loginIn(page);
    const denied = await seen(page, await page.goto(`${origin}/admin/users`));
    expect(denied.status).toBe(403);
    expect(await page.locator('h1').textContent()).toBe('You don’t have access to this page');
    expect(denied.links).toEqual([{ text: 'Go to the start page', href: '/app/home' }]);
    expectCleanPage(denied);
    await screenshot(page, 'browser-pages-access-denied');

    const none = await seen(page, await page.goto(`${origin}/nothing/here`));
    expect(none.status).toBe(403);
    expect(await page.locator('h1').textContent()).toBe('Page not available');
    expect(none.links).toEqual([{ text: 'Go to the start page', href: '/app/home' }]);
    expectCleanPage(none);
    await screenshot(page, 'browser-pages-no-policy');

    // The same requests from an API client: the JSON body exactly as before, reason and all.
    const cookie = (await context.cookies(origin)).find((c) => c.name === '__Host-nox_session')!;
    const api = new Browser('application/json');
    api.setCookie('127.0.0.1', '__Host-nox_session', cookie.value);
    const apiDenied = await api.request(`${origin}/admin/users`);
    expect(apiDenied.status).toBe(403);
    expect(apiDenied.contentType).toBe('application/json');
    expect(Object.keys(jsonOf(apiDenied))).toEqual(['error', 'reason', 'decisionId']);
    expect(jsonOf(apiDenied)).toMatchObject({
      error: 'ACCESS_DENIED',
      reason: expect.stringContaining('pol-zeta-admin'),
    });
    const apiNone = await api.request(`${origin}/nothing/here`);
    expect(apiNone.status).toBe(403);
    expect(jsonOf(apiNone).error).toBe('NO_POLICY');
    // A wildcard Accept (curl, fetch) is an API client too.
    const curl = await new Browser('*/*').request(`${origin}/nothing/here`);
    expect(curl.contentType).toBe('application/json');
    await context.close();
  });
});
