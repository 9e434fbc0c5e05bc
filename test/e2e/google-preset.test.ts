import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser } from '../harness/browser.js';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { httpCheck, SidecarClient } from '../harness/grpcClient.js';
import { policyDir, writeSecret } from '../harness/policies.js';
import { scratchDir } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { echoedHeaders, startUpstream, type Upstream } from '../harness/upstream.js';

/** A web client id as Google issues them; the aud (and azp) of its ID tokens. */
const clientId = '407408718192-0kq8u3jvd2b5e1s2h0sp6m4h3l8c1a2b.apps.googleusercontent.com';
const clientSecret = 'GOCSPX-nox-test-secret';
const user = { sub: '110169484474386276334', email: 'alice@example.com', hd: 'example.com', name: 'Alice' };

// The google preset against a stand-in of Google's certs endpoint, serving its documented
// shapes (developers.google.com/identity/openid-connect/openid-connect, "Validating an ID
// token"; the keys document of https://www.googleapis.com/oauth2/v3/certs: kty, alg, use, kid,
// n, e) and Google's ID tokens (typ JWT; iss "https://accounts.google.com" or, as Google also
// writes it, "accounts.google.com"; azp and aud the client id; sub a numeric string; hd for
// Workspace accounts; email and email_verified; at_hash). The preset keeps Google's own issuer
// and takes only the endpoint URLs from the spec, so the iss the test signs is exactly Google's.
// The browser login goes through real Envoy: the preset fills Google's endpoints itself (no
// discovery), the stand-in's authorization endpoint answers as Google's does (code, scope,
// authuser, hd), and its token endpoint checks the client secret (HTTP Basic), the
// redirect_uri and PKCE, then returns Google's token response with an ID token.
describe('OAuth2Provider type google', () => {
  let server: Server;
  let sidecar: Sidecar;
  let client: SidecarClient;
  let envoy: Envoy;
  let upstream: Upstream;
  let sign: (claims: Record<string, unknown>, kid?: string) => Promise<string>;
  let certsServed = 0;
  const served = new Map<string, number>();
  const codes = new Map<string, { redirectUri: string; challenge: string; nonce: string }>();

  beforeAll(async () => {
    const { privateKey, publicKey } = await generateKeyPair('RS256');
    const pub = await exportJWK(publicKey);
    const keys = [
      {
        kty: 'RSA',
        alg: 'RS256',
        use: 'sig',
        kid: 'c7e04465649ffa606557650c7e65f0a87ae00fe8',
        n: pub.n,
        e: pub.e,
      },
    ];
    server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      served.set(url.pathname, (served.get(url.pathname) ?? 0) + 1);
      if (url.pathname === '/oauth2/v3/certs') {
        certsServed++;
        res.writeHead(200, {
          'content-type': 'application/json; charset=UTF-8',
          'cache-control': 'public, max-age=22578, must-revalidate, no-transform',
        });
        res.end(JSON.stringify({ keys }));
        return;
      }
      if (url.pathname === '/o/oauth2/v2/auth') {
        const q = url.searchParams;
        const code = `4/0A${randomBytes(24).toString('base64url')}`;
        codes.set(code, {
          redirectUri: q.get('redirect_uri')!,
          challenge: q.get('code_challenge')!,
          nonce: q.get('nonce')!,
        });
        const back = new URL(q.get('redirect_uri')!);
        back.search = new URLSearchParams({
          state: q.get('state')!,
          code,
          scope:
            'email profile openid https://www.googleapis.com/auth/userinfo.profile https://www.googleapis.com/auth/userinfo.email',
          authuser: '0',
          hd: user.hd,
          prompt: 'consent',
        }).toString();
        res.writeHead(302, { location: back.href }).end();
        return;
      }
      if (url.pathname === '/token' && req.method === 'POST') {
        let body = '';
        req.on('data', (c) => {
          body += c;
        });
        req.on('end', async () => {
          const f = new URLSearchParams(body);
          const grant = codes.get(f.get('code') ?? '');
          codes.delete(f.get('code') ?? '');
          // RFC 6749 §2.3.1: client_id:client_secret, each form-urlencoded, in HTTP Basic.
          const [id, secret] = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64')
            .toString()
            .split(':')
            .map((x) => decodeURIComponent(x.replace(/\+/g, ' ')));
          const ok =
            grant &&
            id === clientId &&
            secret === clientSecret &&
            f.get('grant_type') === 'authorization_code' &&
            f.get('redirect_uri') === grant.redirectUri &&
            createHash('sha256')
              .update(f.get('code_verifier') ?? '')
              .digest('base64url') === grant.challenge;
          res.setHeader('content-type', 'application/json; charset=utf-8');
          if (!ok || !grant) {
            res
              .writeHead(400)
              .end(JSON.stringify({ error: 'invalid_grant', error_description: 'Bad Request' }));
            return;
          }
          const accessToken = `ya29.a0${randomBytes(40).toString('base64url')}`;
          const atHash = createHash('sha256')
            .update(accessToken)
            .digest()
            .subarray(0, 16)
            .toString('base64url');
          const idToken = await sign({
            iss: 'https://accounts.google.com',
            azp: clientId,
            aud: clientId,
            sub: user.sub,
            hd: user.hd,
            email: user.email,
            email_verified: true,
            at_hash: atHash,
            nonce: grant.nonce,
            name: user.name,
            iat: Math.floor(Date.now() / 1000),
            exp: Math.floor(Date.now() / 1000) + 3600,
          });
          res.writeHead(200).end(
            JSON.stringify({
              access_token: accessToken,
              expires_in: 3599,
              scope:
                'openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile',
              token_type: 'Bearer',
              id_token: idToken,
            }),
          );
        });
        return;
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    const google = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
    sign = (claims, kid = keys[0]!.kid) =>
      new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' }).sign(privateKey);
    const secrets = scratchDir('google-secrets');
    writeSecret(secrets, 'default', 'google-oauth', { 'client-secret': clientSecret });
    writeSecret(secrets, 'default', 'google-session', { 'session-key': randomBytes(32).toString('base64') });
    const dir = policyDir(
      'google-preset',
      `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: google }
spec:
  type: google
  clientId: ${clientId}
  clientSecretRef: { name: google-oauth, key: client-secret }
  endpoints:
    authorization: ${google}/o/oauth2/v2/auth
    token: ${google}/token
    jwks: ${google}/oauth2/v3/certs
  login:
    enabled: true
    callbackPath: /oauth2/google
    encryptionKeySecretRef: { name: google-session, key: session-key }
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api }
spec:
  providers: [google]
  login: { providers: [google] }
  identityHeaders: { user: x-nox-user, email: x-nox-email }
  rules: [{ name: signed-in, action: Allow, when: { authenticated: Authenticated } }]
`,
    );
    sidecar = await startSidecar({
      policyPath: dir,
      env: { NOX_CHECK_DEADLINE_MS: '2000', NOX_SECRETS_DIR: secrets },
    });
    client = new SidecarClient(sidecar.grpcPort);
    upstream = await startUpstream();
    envoy = await startEnvoy({
      authzPort: sidecar.grpcPort,
      upstreamPort: upstream.port,
      authzTimeoutMs: 3000,
      loginCallbackPaths: ['/oauth2/google'],
    });
  });
  afterAll(async () => {
    client?.close();
    await envoy?.stop();
    await sidecar?.stop();
    await upstream?.close();
    server?.close();
  });

  const check = async (token: string) => {
    const res = await client.check(httpCheck('/api/x', { headers: { authorization: `Bearer ${token}` } }));
    const h = (k: string) => res.okResponse?.headers?.find((x) => x.header?.key === k)?.header?.value;
    const body = JSON.parse(res.deniedResponse?.body ?? '{}') as { error?: string; reason?: string };
    return {
      status: res.deniedResponse?.status?.code ?? 200,
      user: h('x-nox-user'),
      email: h('x-nox-email'),
      error: body.error,
      reason: body.reason,
    };
  };
  const now = () => Math.floor(Date.now() / 1000);
  /** An ID token as Google's token endpoint returns it for a Workspace user. */
  const idToken = (extra: Record<string, unknown> = {}) =>
    sign({
      iss: 'https://accounts.google.com',
      azp: clientId,
      aud: clientId,
      sub: '110169484474386276334',
      hd: 'example.com',
      email: 'alice@example.com',
      email_verified: true,
      at_hash: 'HK6E_P6Dh8Y93mRNtsDB1Q',
      iat: now(),
      exp: now() + 3600,
      ...extra,
    });

  it('accepts Google ID tokens under both ways Google writes its issuer', async () => {
    for (const iss of ['https://accounts.google.com', 'accounts.google.com'])
      expect(await check(await idToken({ iss })), iss).toMatchObject({
        status: 200,
        user: 'google:110169484474386276334',
        email: 'alice@example.com',
      });
    expect(certsServed).toBe(1);
  });

  it('sends the email only when Google verified it', async () => {
    expect(await check(await idToken({ email_verified: false }))).toMatchObject({
      status: 200,
      email: undefined,
    });
  });

  it('refuses another issuer, another audience, an expired token and an unknown key', async () => {
    for (const [what, token] of [
      ['issuer', await idToken({ iss: 'https://accounts.google.com.evil.example' })],
      ['issuer without scheme, other host', await idToken({ iss: 'accounts.google.co' })],
      ['audience', await idToken({ aud: 'another-client.apps.googleusercontent.com' })],
      ['expired', await idToken({ iat: now() - 7200, exp: now() - 3600 })],
      [
        'key',
        await sign({ iss: 'https://accounts.google.com', aud: clientId, sub: '1', exp: now() + 60 }, 'other'),
      ],
    ] as const)
      expect(await check(token), what).toMatchObject({ status: 401, error: 'UNAUTHENTICATED' });
  });

  it('signs a browser in with Google: the preset’s own endpoints, no discovery, the ID token checked', async () => {
    const browser = new Browser();
    const start = await browser.request(`${envoy.url}/app/page`);
    const callback = (await browser.request(start.location!)).location!;
    // The callback asked as an API client would be: a failure's JSON says why.
    const done = await browser.request(callback, { headers: { accept: 'application/json' } });
    expect(done.status, done.body).toBe(302);
    const last = await browser.request(done.location!);
    expect(last.status).toBe(200);
    const hops = [start];
    const authorize = new URL(hops[0]!.location!);
    expect(authorize.pathname).toBe('/o/oauth2/v2/auth');
    expect(Object.fromEntries(authorize.searchParams)).toMatchObject({
      client_id: clientId,
      response_type: 'code',
      scope: 'openid email profile',
      code_challenge_method: 'S256',
    });
    expect(echoedHeaders(last.body)).toMatchObject({
      'x-nox-user': `google:${user.sub}`,
      'x-nox-email': user.email,
    });
    expect(served.get('/token')).toBe(1);
    expect(served.get('/.well-known/openid-configuration')).toBeUndefined();
    // The session carries on; the provider is not asked again.
    expect((await browser.request(`${envoy.url}/app/again`)).status).toBe(200);
    expect(served.get('/token')).toBe(1);
  });
});
