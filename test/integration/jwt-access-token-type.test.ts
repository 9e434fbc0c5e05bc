import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, type JWTPayload, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser } from '../harness/browser.js';
import { httpCheck, SidecarClient } from '../harness/grpcClient.js';
import { type OidcIssuer, startOidcIssuer } from '../harness/oidc.js';
import { type LoginOp, startLoginOp } from '../harness/oidcLogin.js';
import { policyDir } from '../harness/policies.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';

// OAuth2Provider accessTokenType against the built sidecar: ID tokens presented as bearer
// tokens. Real tokens from oidc-provider (an ID token from an authorization code login, RFC
// 9068 at+jwt access tokens from the client credentials grant with resource indicators), and
// tokens shaped as Keycloak, Okta and Auth0 document them, signed with a JWKS the test serves.
describe('OAuth2Provider accessTokenType: an ID token is not an access token', () => {
  let login: LoginOp;
  let cc: OidcIssuer;
  let shapes: Server;
  let shapesIssuer: string;
  let sidecar: Sidecar;
  let client: SidecarClient;
  let signShape: (header: Record<string, unknown>, claims: JWTPayload) => Promise<string>;
  const redirectUri = 'http://127.0.0.1:9/cb';
  const api = 'https://api.nox.test';

  beforeAll(async () => {
    login = await startLoginOp({
      clients: [{ clientId: 'web-app', secret: 'web-secret', redirectUris: [redirectUri] }],
      users: { alice: { email: 'alice@example.test' } },
    });
    cc = await startOidcIssuer([{ clientId: 'svc', secret: 'svc-secret' }], api);
    const { privateKey, publicKey } = await generateKeyPair('RS256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 's1', alg: 'RS256', use: 'sig' };
    shapes = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/.well-known/openid-configuration')
        res.end(JSON.stringify({ issuer: shapesIssuer, jwks_uri: `${shapesIssuer}/jwks` }));
      else res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((r) => shapes.listen(0, '127.0.0.1', () => r()));
    shapesIssuer = `http://127.0.0.1:${(shapes.address() as { port: number }).port}`;
    signShape = (header, claims) =>
      new SignJWT({ sub: 'u-1', ...claims })
        .setProtectedHeader({ alg: 'RS256', kid: 's1', ...header })
        .setIssuer(shapesIssuer)
        .setIssuedAt()
        .setExpirationTime('10m')
        .sign(privateKey);

    const provider = (name: string, spec: Record<string, unknown>) => `---
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: ${name} }
spec: ${JSON.stringify({ type: 'oidc', allowedAlgorithms: ['RS256'], ...spec })}
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: ${name} }
spec:
  match: { paths: [{ value: /${name} }] }
  providers: [${name}]
  rules: [{ name: in, action: Allow, when: { authenticated: Authenticated } }]
`;
    const yaml = [
      // The login provider's client: audiences default to the clientId, as for an app that
      // logs users in and calls its own API with the same registration.
      provider('login-default', { issuer: login.issuer, clientId: 'web-app' }),
      provider('login-atjwt', { issuer: login.issuer, clientId: 'web-app', accessTokenType: 'AtJwt' }),
      provider('login-any', { issuer: login.issuer, clientId: 'web-app', accessTokenType: 'Any' }),
      provider('cc-default', { issuer: cc.issuer, clientId: 'gw', audiences: [api] }),
      provider('cc-atjwt', { issuer: cc.issuer, clientId: 'gw', audiences: [api], accessTokenType: 'AtJwt' }),
      provider('shape-default', { issuer: shapesIssuer, clientId: 'web-app', audiences: ['web-app', api] }),
      provider('shape-atjwt', {
        issuer: shapesIssuer,
        clientId: 'web-app',
        audiences: ['web-app', api],
        accessTokenType: 'AtJwt',
      }),
    ].join('');
    // The first token of each provider pays for discovery and the JWKS inside its check.
    sidecar = await startSidecar({
      policyPath: policyDir('jwt-typ', yaml),
      env: { NOX_CHECK_DEADLINE_MS: '2000' },
    });
    client = new SidecarClient(sidecar.grpcPort);
  });
  afterAll(async () => {
    client?.close();
    await sidecar?.stop();
    await login?.close();
    await cc?.close();
    shapes?.close();
  });

  const check = async (path: string, token: string) => {
    const res = await client.check(httpCheck(path, { headers: { authorization: `Bearer ${token}` } }));
    const body = JSON.parse(res.deniedResponse?.body ?? '{}') as { error?: string; reason?: string };
    const user = res.okResponse?.headers?.find((h) => h.header?.key === 'x-nox-user')?.header?.value;
    return { status: res.deniedResponse?.status?.code ?? 200, user, error: body.error, reason: body.reason };
  };
  const refusedAsIdToken = async (path: string, token: string, why: RegExp) => {
    const d = await check(path, token);
    expect(d, path).toMatchObject({ status: 401, error: 'UNAUTHENTICATED' });
    expect(d.reason).toMatch(/an ID token is not an access token/);
    expect(d.reason).toMatch(why);
  };

  /** An authorization code login at the real provider, as a browser and a client would do it. */
  const idToken = async (nonce?: string): Promise<string> => {
    const browser = new Browser('application/json');
    const verifier = randomBytes(32).toString('base64url');
    const q = new URLSearchParams({
      client_id: 'web-app',
      response_type: 'code',
      redirect_uri: redirectUri,
      scope: 'openid email',
      state: randomBytes(8).toString('hex'),
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      ...(nonce ? { nonce } : {}),
    });
    let url = `${login.issuer}/auth?${q}`;
    let code: string | null = null;
    for (let hop = 0; hop < 10 && code === null; hop++) {
      const h = await browser.request(url);
      if (!h.location) throw new Error(`login stopped at ${url}: ${h.status} ${h.body}`);
      if (h.location.startsWith(redirectUri)) code = new URL(h.location).searchParams.get('code');
      else url = h.location;
    }
    if (!code) throw new Error('no authorization code');
    const res = await fetch(`${login.issuer}/token`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from('web-app:web-secret').toString('base64')}`,
      },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code,
        redirect_uri: redirectUri,
        code_verifier: verifier,
      }).toString(),
    });
    const body = (await res.json()) as { id_token?: string };
    if (!body.id_token) throw new Error(`token endpoint: ${res.status} ${JSON.stringify(body)}`);
    return body.id_token;
  };

  it('refuses a real ID token (with a nonce) by default and under AtJwt; Any accepts it', async () => {
    const t = await idToken('n-0S6_WzA2Mj');
    expect(decodeJwt(t)).toMatchObject({ aud: 'web-app', nonce: 'n-0S6_WzA2Mj', sub: 'alice' });
    await refusedAsIdToken('/login-default', t, /nonce/);
    await refusedAsIdToken('/login-atjwt', t, /at\+jwt/);
    expect(await check('/login-any', t)).toMatchObject({ status: 200, user: 'login-any:alice' });
  });

  it('refuses a real ID token without a nonce: its aud is the client id alone and it grants no scope', async () => {
    const t = await idToken();
    expect(decodeJwt(t).nonce).toBeUndefined();
    await refusedAsIdToken('/login-default', t, /client id alone/);
    expect((await check('/login-any', t)).status).toBe(200);
  });

  it('accepts real RFC 9068 access tokens (typ at+jwt) by default and under AtJwt', async () => {
    const t = await cc.token('svc');
    expect(decodeProtectedHeader(t).typ).toBe('at+jwt');
    expect(await check('/cc-default', t)).toMatchObject({ status: 200, user: 'cc-default:svc' });
    expect(await check('/cc-atjwt', t)).toMatchObject({ status: 200, user: 'cc-atjwt:svc' });
  });

  it('AtJwt: only typ at+jwt, in either spelling and any case (RFC 9068 §4, RFC 7515 §4.1.9)', async () => {
    for (const typ of ['at+jwt', 'application/at+jwt', 'AT+JWT', 'Application/At+Jwt']) {
      const t = await signShape({ typ }, { aud: api, client_id: 'svc', scope: 'api', jti: typ });
      expect((await check('/shape-atjwt', t)).status, typ).toBe(200);
    }
    // A perfectly good access token of another profile is still not typed as one.
    const plain = await signShape({ typ: 'JWT' }, { aud: api, azp: 'web-app', scope: 'api' });
    await refusedAsIdToken('/shape-atjwt', plain, /typ "JWT"/);
    await refusedAsIdToken('/shape-atjwt', await signShape({}, { aud: api, scope: 'api' }), /no typ/);
    await refusedAsIdToken('/shape-atjwt', await signShape({ typ: 'jwt+at' }, { aud: api }), /typ "jwt\+at"/);
  });

  it("NotIdToken: accepts Keycloak's, Okta's and Auth0's access tokens as they document them", async () => {
    const accepted = {
      // Keycloak: typ JWT, a "typ": "Bearer" claim, azp, scope.
      keycloak: await signShape(
        { typ: 'JWT' },
        { aud: api, typ: 'Bearer', azp: 'web-app', scope: 'openid email', sid: 's' },
      ),
      // Okta custom authorization server: no typ header, cid and scp.
      okta: await signShape({}, { aud: api, cid: 'web-app', uid: 'u', scp: ['api'], ver: 1, jti: 'AT.1' }),
      // Auth0 default profile: aud with its userinfo endpoint, azp, scope.
      auth0: await signShape(
        { typ: 'JWT' },
        { aud: [api, 'https://tenant.example/userinfo'], azp: 'web-app', scope: 'openid read' },
      ),
      // Auth0 RFC 9068 profile.
      auth0Rfc9068: await signShape(
        { typ: 'at+jwt' },
        { aud: api, client_id: 'web-app', jti: 'j', scope: 'read' },
      ),
      // A client credentials token issued to the client for itself, granting a scope.
      selfScoped: await signShape({ typ: 'JWT' }, { aud: 'web-app', scope: 'api' }),
    };
    for (const [shape, t] of Object.entries(accepted))
      expect(await check('/shape-default', t), shape).toMatchObject({
        status: 200,
        user: 'shape-default:u-1',
      });
  });

  it('NotIdToken: refuses ID tokens as Keycloak, Okta and other issuers shape them', async () => {
    // Keycloak ID token: typ claim "ID", azp (so azp alone proves nothing).
    await refusedAsIdToken(
      '/shape-default',
      await signShape({ typ: 'JWT' }, { aud: 'web-app', azp: 'web-app', typ: 'ID', sid: 's' }),
      /typ claim "ID"/,
    );
    // Okta ID token: no typ, aud the client id, amr and idp, no nonce in a code flow.
    await refusedAsIdToken(
      '/shape-default',
      await signShape({}, { aud: 'web-app', amr: ['pwd'], idp: 'x', auth_time: 1 }),
      /client id alone/,
    );
    for (const claim of ['nonce', 'at_hash', 'c_hash', 's_hash'])
      await refusedAsIdToken(
        '/shape-default',
        await signShape({ typ: 'JWT' }, { aud: api, scope: 'api', [claim]: 'x' }),
        new RegExp(claim),
      );
    // Explicitly typed as something else (RFC 8725 §3.11): an ID token, a logout token.
    for (const typ of ['id_token+jwt', 'logout+jwt', 'secevent+jwt'])
      await refusedAsIdToken(
        '/shape-default',
        await signShape({ typ }, { aud: api, scope: 'api' }),
        new RegExp(typ.replace('+', '\\+')),
      );
  });

  it('a refused ID token does not poison the cache: the same client then gets in with an access token', async () => {
    const id = await idToken('n-2');
    await refusedAsIdToken('/login-default', id, /nonce/);
    await refusedAsIdToken('/login-default', id, /nonce/);
    expect((await check('/cc-default', await cc.token('svc'))).status).toBe(200);
  });
});
