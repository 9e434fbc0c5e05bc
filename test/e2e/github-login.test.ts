import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, type Hop } from '../harness/browser.js';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { type GithubApi, type GithubUser, startGithubApi } from '../harness/github.js';
import { writeSecret } from '../harness/policies.js';
import { scratchDir } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { echoedHeaders, startUpstream, type Upstream } from '../harness/upstream.js';

// Browser login with GitHub, which is OAuth 2.0 without OpenID Connect, through real Envoy:
// the code exchanged (PKCE, client secret in the body) at a stand-in speaking github.com's
// documented OAuth endpoints, the identity read from its REST API (/user, /user/orgs,
// /user/emails), the organization the provider requires checked before any session.

const app = { clientId: 'Ov23liNoxExample01', clientSecret: 'gh-app-secret' };

const policy = (gh: string) => `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: gh }
spec:
  type: github
  clientId: ${app.clientId}
  clientSecretRef: { name: gh-oauth, key: client-secret }
  endpoints:
    authorization: ${gh}/login/oauth/authorize
    token: ${gh}/login/oauth/access_token
    userinfo: ${gh}
  github: { organizations: [acme] }
  login:
    enabled: true
    callbackPath: /oauth2/github
    logoutPath: /logout
    sessionTTL: 1h
    encryptionKeySecretRef: { name: gh-session, key: session-key }
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: app }
spec:
  match: { paths: [{ type: Prefix, value: /app }] }
  providers: [gh]
  login: { providers: [gh] }
  identityHeaders: { user: x-nox-user, email: x-nox-email, groups: x-nox-groups }
  rules:
    - { name: members, action: Allow, when: { groups: [acme] } }
  defaultAction: Deny
`;

const alice: GithubUser = {
  login: 'alice-gh',
  id: 1001,
  name: 'Alice',
  email: 'alice@public.example',
  orgs: ['acme'],
  emails: [
    { email: 'alice@acme.example', primary: true, verified: true },
    { email: 'alice@public.example', primary: false, verified: true },
  ],
};

describe('browser login with GitHub (OAuth 2.0, identity from the user API)', () => {
  let gh: GithubApi;
  let sidecar: Sidecar;
  let envoy: Envoy;
  let upstream: Upstream;

  beforeAll(async () => {
    gh = await startGithubApi(app);
    const secrets = scratchDir('gh-login-secrets');
    writeSecret(secrets, 'default', 'gh-oauth', { 'client-secret': app.clientSecret });
    writeSecret(secrets, 'default', 'gh-session', { 'session-key': randomBytes(32).toString('base64') });
    const policyPath = join(scratchDir('gh-login-policy'), 'policy.yaml');
    writeFileSync(policyPath, policy(gh.url));
    upstream = await startUpstream();
    sidecar = await startSidecar({
      policyPath,
      env: { NOX_SECRETS_DIR: secrets, NOX_CHECK_DEADLINE_MS: '2500' },
    });
    envoy = await startEnvoy({
      authzPort: sidecar.grpcPort,
      upstreamPort: upstream.port,
      authzTimeoutMs: 3000,
      loginCallbackPaths: ['/oauth2/github'],
    });
  });
  afterAll(async () => {
    await envoy?.stop();
    await sidecar?.stop();
    await upstream?.close();
    await gh?.close();
  });

  const seenBy = (hop: Hop) => echoedHeaders(hop.body);

  async function login(user: GithubUser | undefined, path = '/app/page') {
    gh.signIn = user;
    const browser = new Browser();
    const hops = await browser.navigate(`${envoy.url}${path}`);
    return { browser, hops, last: hops.at(-1)! };
  }

  it('signs a member in: GitHub id as subject, the verified primary email, organizations as groups', async () => {
    const before = gh.exchanges().granted;
    const { browser, hops, last } = await login(alice);
    expect(last.status, hops.map((h) => `${h.status} ${h.url}`).join('\n')).toBe(200);
    // Nox asked GitHub for the scopes its user API needs, with PKCE and its own callback.
    const authorize = new URL(hops[0]!.location!);
    expect(`${authorize.origin}${authorize.pathname}`).toBe(`${gh.url}/login/oauth/authorize`);
    expect(Object.fromEntries(authorize.searchParams)).toMatchObject({
      client_id: app.clientId,
      response_type: 'code',
      scope: 'read:user user:email read:org',
      code_challenge_method: 'S256',
      redirect_uri: `${envoy.url}/oauth2/github`,
    });
    expect(gh.exchanges().granted).toBe(before + 1);
    expect(seenBy(last)).toMatchObject({
      'x-nox-user': 'gh:1001',
      'x-nox-email': 'alice@acme.example',
      'x-nox-groups': 'acme',
    });
    // The session carries on without GitHub: no second exchange, no redirect.
    const again = await browser.request(`${envoy.url}/app/other`);
    expect(again.status).toBe(200);
    expect(gh.exchanges().granted).toBe(before + 1);
    expect(browser.cookie('127.0.0.1', '__Host-nox_session')).toMatch(/^[\w-]{43}$/);
  });

  it('sends no email header when GitHub has not verified the primary address', async () => {
    const { last } = await login({
      ...alice,
      id: 1002,
      login: 'bob-gh',
      emails: [{ email: 'bob@acme.example', primary: true, verified: false }],
    });
    expect(last.status).toBe(200);
    expect(seenBy(last)['x-nox-user']).toBe('gh:1002');
    expect(seenBy(last)['x-nox-email']).toBeUndefined();
  });

  it('refuses a GitHub user outside the required organization, and one who declines: no session', async () => {
    for (const [user, reason] of [
      [
        { ...alice, id: 1003, login: 'eve-gh', orgs: ['elsewhere'] },
        /not a member of a required organization/,
      ],
      [undefined, /access_denied/],
    ] as const) {
      gh.signIn = user;
      const browser = new Browser();
      const start = await browser.request(`${envoy.url}/app/page`);
      const callback = (await browser.request(start.location!)).location!;
      // Asked as an API client, the callback's JSON says why; a browser gets a page (browser-pages.test.ts).
      const failed = await browser.request(callback, { headers: { accept: 'application/json' } });
      expect(failed.status).toBe(401);
      const body = JSON.parse(failed.body) as { error: string; reason: string };
      expect(body.error).toBe('LOGIN_FAILED');
      expect(body.reason).toMatch(reason);
      expect(browser.cookie('127.0.0.1', '__Host-nox_session')).toBeUndefined();
    }
  });

  it('refuses a replayed callback before GitHub sees the code again', async () => {
    gh.signIn = alice;
    const browser = new Browser();
    const start = await browser.request(`${envoy.url}/app/page`);
    const back = await browser.request(start.location!); // GitHub's answer: back to the callback
    const callback = back.location!;
    expect((await browser.request(callback)).status).toBe(302);
    const exchanges = gh.exchanges();
    const replay = await browser.request(callback, { headers: { accept: 'application/json' } });
    expect(replay.status).toBe(401);
    expect(JSON.parse(replay.body)).toMatchObject({ error: 'LOGIN_FAILED' });
    expect(gh.exchanges()).toEqual(exchanges);
  });
});
