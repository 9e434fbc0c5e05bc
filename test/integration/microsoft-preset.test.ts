import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNamespace, installCrds } from '../harness/crds.js';
import { httpCheck, SidecarClient } from '../harness/grpcClient.js';
import { type Kube, startKube } from '../harness/kube.js';
import { serverSideApply } from '../harness/kubeHttp.js';
import { scratchDir } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';

const tenantA = '11111111-1111-1111-1111-111111111111';
const tenantB = '22222222-2222-2222-2222-222222222222';
const tenantC = '33333333-3333-3333-3333-333333333333';
/** The API's application (client) id: the aud of v2.0 access tokens issued for it. */
const apiAppId = '6e74172b-be56-4843-9ff4-e66a39bb12e3';
/** Another application, the client calling the API (azp). */
const clientAppId = 'c44b4083-3bb0-49c1-b47d-974e53cbdf3c';

// The microsoft preset against a local stand-in of Entra ID that serves its documented shapes:
// v2.0 discovery per tenant (for "organizations" and "common" the issuer is the template
// https://login.microsoftonline.com/{tenantid}/v2.0), the keys document (kty, use, kid, x5t,
// n, e, and a per-key issuer), and v2.0 tokens (typ JWT; iss with the token's tid, tid, oid,
// preferred_username; access tokens with azp, azpacr, scp or roles; ID tokens with nonce and
// no azp). A single-tenant provider accepts its tenant only; a multi-tenant one only the
// tenants of microsoft.allowedTenants, each with an iss naming its own tid; ID tokens never.
describe('OAuth2Provider type microsoft', () => {
  let server: Server;
  let base: string;
  let sidecar: Sidecar;
  let client: SidecarClient;
  let sign: (claims: Record<string, unknown>) => Promise<string>;
  const discovery = (tenant: string) => {
    const multi = tenant === 'organizations' || tenant === 'common';
    return {
      token_endpoint: `${base}/${tenant}/oauth2/v2.0/token`,
      token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
      jwks_uri: `${base}/${tenant}/discovery/v2.0/keys`,
      response_modes_supported: ['query', 'fragment', 'form_post'],
      subject_types_supported: ['pairwise'],
      id_token_signing_alg_values_supported: ['RS256'],
      response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
      scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
      issuer: `${base}/${multi ? '{tenantid}' : tenant}/v2.0`,
      request_uri_parameter_supported: false,
      userinfo_endpoint: 'https://graph.microsoft.com/oidc/userinfo',
      authorization_endpoint: `${base}/${tenant}/oauth2/v2.0/authorize`,
      end_session_endpoint: `${base}/${tenant}/oauth2/v2.0/logout`,
      claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'auth_time', 'nonce', 'tid', 'oid', 'email'],
      tenant_region_scope: multi ? null : 'EU',
      cloud_instance_name: 'microsoftonline.com',
    };
  };

  beforeAll(async () => {
    const { privateKey, publicKey } = await generateKeyPair('RS256');
    const pub = await exportJWK(publicKey);
    const jwk = {
      kty: 'RSA',
      use: 'sig',
      kid: 'entra-1',
      x5t: 'entra-1',
      n: pub.n,
      e: pub.e,
      issuer: `${base}/{tenantid}/v2.0`,
    };
    server = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      const url = req.url ?? '';
      const m = /^\/([^/]+)\/v2\.0\/\.well-known\/openid-configuration$/.exec(url);
      if (m) res.end(JSON.stringify(discovery(m[1]!)));
      else if (/^\/[^/]+\/discovery\/v2\.0\/keys$/.test(url)) res.end(JSON.stringify({ keys: [jwk] }));
      else {
        res.statusCode = 404;
        res.end('{"error":"not_found"}');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    jwk.issuer = `${base}/{tenantid}/v2.0`;
    sign = (claims) =>
      new SignJWT({ ver: '2.0', aio: 'opaque', rh: 'opaque', uti: 'opaque', ...claims })
        .setProtectedHeader({ typ: 'JWT', alg: 'RS256', kid: 'entra-1' })
        .setAudience((claims.aud as string) ?? apiAppId)
        .setIssuedAt()
        .setNotBefore('0s')
        .setExpirationTime('10m')
        .sign(privateKey);
    // Issuer and JWKS come from the stand-in's discovery documents, as an operator would copy
    // them; everything else comes from the preset.
    const single = (await (
      await fetch(`${base}/${tenantA}/v2.0/.well-known/openid-configuration`)
    ).json()) as {
      issuer: string;
      jwks_uri: string;
    };
    const orgs = (await (
      await fetch(`${base}/organizations/v2.0/.well-known/openid-configuration`)
    ).json()) as {
      issuer: string;
      jwks_uri: string;
    };
    expect(orgs.issuer).toBe(`${base}/{tenantid}/v2.0`);
    const policy = (name: string, provider: string) => `---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: ${name} }
spec:
  match: { paths: [{ value: /${name} }] }
  providers: [${provider}]
  rules: [{ name: in, action: Allow, when: { authenticated: Authenticated } }]
`;
    const dir = scratchDir('entra');
    writeFileSync(
      join(dir, 'p.yaml'),
      `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: entra-single }
spec:
  type: microsoft
  tenant: ${tenantA}
  clientId: ${apiAppId}
  issuer: ${single.issuer}
  endpoints: { jwks: ${single.jwks_uri} }
---
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: entra-multi }
spec:
  type: microsoft
  tenant: organizations
  clientId: ${apiAppId}
  microsoft: { allowedTenants: [${tenantA}, ${tenantC}] }
  issuer: "${orgs.issuer}"
  endpoints: { jwks: ${orgs.jwks_uri} }
---
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: entra-open }
spec:
  type: microsoft
  tenant: common
  clientId: ${apiAppId}
  issuer: "${orgs.issuer}"
  endpoints: { jwks: ${orgs.jwks_uri} }
${policy('single', 'entra-single')}${policy('multi', 'entra-multi')}${policy('open', 'entra-open')}`,
    );
    sidecar = await startSidecar({ policyPath: dir, env: { NOX_CHECK_DEADLINE_MS: '2000' } });
    client = new SidecarClient(sidecar.grpcPort);
  });
  afterAll(async () => {
    client?.close();
    await sidecar?.stop();
    server?.close();
  });

  const check = async (path: string, token: string) => {
    const res = await client.check(httpCheck(path, { headers: { authorization: `Bearer ${token}` } }));
    const h = (k: string) => res.okResponse?.headers?.find((x) => x.header?.key === k)?.header?.value;
    const body = JSON.parse(res.deniedResponse?.body ?? '{}') as { error?: string; reason?: string };
    return {
      status: res.deniedResponse?.status?.code ?? 200,
      user: h('x-nox-user'),
      error: body.error,
      reason: body.reason,
    };
  };
  /** A v2.0 access token for the API, delegated (scp) by the client app. */
  const accessToken = (tid: string, oid: string, extra: Record<string, unknown> = {}) =>
    sign({
      iss: `${base}/${tid}/v2.0`,
      tid,
      oid,
      sub: `pairwise-${oid}`,
      name: oid,
      preferred_username: `${oid}@contoso.example`,
      azp: clientAppId,
      azpacr: '1',
      scp: 'api.read',
      ...extra,
    });
  /** A v2.0 ID token issued to the API's own app registration (aud its client id). */
  const idToken = (tid: string, oid: string, extra: Record<string, unknown> = {}) =>
    sign({
      iss: `${base}/${tid}/v2.0`,
      tid,
      oid,
      sub: `pairwise-${oid}`,
      name: oid,
      preferred_username: `${oid}@contoso.example`,
      ...extra,
    });

  it('single tenant: accepts its tenant, names the user by oid, refuses another tenant', async () => {
    expect(await check('/single', await accessToken(tenantA, 'alice'))).toMatchObject({
      status: 200,
      user: 'entra-single:alice',
    });
    expect((await check('/single', await accessToken(tenantB, 'bob'))).status).toBe(401);
  });

  it('multi-tenant: only the tenants of microsoft.allowedTenants, each with an iss naming its own tid', async () => {
    expect(await check('/multi', await accessToken(tenantA, 'alice'))).toMatchObject({
      status: 200,
      user: 'entra-multi:alice',
    });
    expect((await check('/multi', await accessToken(tenantC, 'carol'))).user).toBe('entra-multi:carol');
    // A genuine token of a tenant not on the list: signed by the same keys, its iss matching its tid.
    expect(await check('/multi', await accessToken(tenantB, 'bob'))).toMatchObject({
      status: 401,
      error: 'UNAUTHENTICATED',
      reason: expect.stringContaining(`tenant "${tenantB}" is not in microsoft.allowedTenants`),
    });
    // Listed tid, but the iss of another tenant (and the other way round).
    const forged = await accessToken(tenantB, 'eve', { tid: tenantA });
    expect((await check('/multi', forged)).status).toBe(401);
    const forged2 = await accessToken(tenantA, 'eve', { tid: tenantB });
    expect((await check('/multi', forged2)).status).toBe(401);
    // No tid at all.
    expect((await check('/multi', await accessToken(tenantA, 'eve', { tid: undefined }))).status).toBe(401);
  });

  it('an app-only token (roles, no scp) is an access token; ID tokens (no azp) are not', async () => {
    const appOnly = await accessToken(tenantA, 'daemon', {
      scp: undefined,
      roles: ['Items.Read.All'],
      idtyp: 'app',
    });
    expect((await check('/single', appOnly)).status).toBe(200);
    for (const path of ['/single', '/multi']) {
      const withNonce = await idToken(tenantA, 'alice', { nonce: 'n-1' });
      expect(await check(path, withNonce)).toMatchObject({
        status: 401,
        error: 'UNAUTHENTICATED',
        reason: expect.stringMatching(/an ID token is not an access token \(it carries nonce\)/),
      });
      // Code flow without a nonce: aud, iss and signature are right; only azp/appid tell.
      expect(await check(path, await idToken(tenantA, 'alice'))).toMatchObject({
        status: 401,
        reason: expect.stringMatching(/an ID token is not an access token \(no azp or appid\)/),
      });
    }
  });

  it('tenant common without allowedTenants is refused when loaded: its route serves nobody', async () => {
    const res = await check('/open', await accessToken(tenantA, 'alice'));
    expect(res.status).not.toBe(200);
    expect(res.user).toBeUndefined();
  });
});

// The same rules as the CRD states them, applied to the real API server (CEL in crds/).
describe('OAuth2Provider microsoft.allowedTenants and accessTokenType in the CRD', () => {
  let kube: Kube;
  let kc: KubeConfig;
  const ns = 'entra-crd';
  const path = `/apis/nox.dev/v1alpha1/namespaces/${ns}/oauth2providers`;
  const apply = (name: string, spec: Record<string, unknown>) =>
    serverSideApply(kc, path, {
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'OAuth2Provider',
      metadata: { name, namespace: ns },
      spec: { clientId: apiAppId, ...spec },
    });
  const refused = async (name: string, spec: Record<string, unknown>, field: string, message: RegExp) => {
    const res = await apply(name, spec);
    expect(res.status, JSON.stringify(res.body)).toBe(422);
    const msg = (res.body as { message: string }).message;
    expect(msg).toContain(`${field}:`);
    expect(msg).toMatch(message);
  };

  beforeAll(async () => {
    kube = await startKube();
    kc = kube.kubeConfig();
    await installCrds(kc);
    await createNamespace(kc, ns);
  });
  afterAll(async () => {
    await kube?.stop();
  });

  it('refuses common and organizations (any case) without allowedTenants, accepts them with', async () => {
    for (const tenant of ['common', 'organizations', 'Organizations', 'COMMON'])
      await refused(
        `open-${tenant.toLowerCase()}`,
        { type: 'microsoft', tenant },
        'spec.microsoft',
        /allowedTenants/,
      );
    for (const tenant of ['common', 'Organizations']) {
      const res = await apply(`ok-${tenant.toLowerCase()}`, {
        type: 'microsoft',
        tenant,
        microsoft: { allowedTenants: [tenantA] },
      });
      expect([200, 201], JSON.stringify(res.body)).toContain(res.status);
    }
    await refused(
      'empty',
      { type: 'microsoft', tenant: 'common', microsoft: { allowedTenants: [] } },
      'spec.microsoft.allowedTenants',
      /at least 1|should have at least 1/,
    );
    await refused(
      'not-a-guid',
      { type: 'microsoft', tenant: 'common', microsoft: { allowedTenants: ['contoso.onmicrosoft.com'] } },
      'spec.microsoft.allowedTenants[0]',
      /should match/,
    );
  });

  it('refuses allowedTenants where it means nothing: a single tenant, consumers, another type', async () => {
    for (const tenant of [tenantA, 'consumers'])
      await refused(
        `single-${tenant.slice(0, 8)}`,
        { type: 'microsoft', tenant, microsoft: { allowedTenants: [tenantB] } },
        'spec.microsoft',
        /only applies to type microsoft with tenant common or organizations/,
      );
    await refused(
      'oidc-tenants',
      { type: 'oidc', issuer: 'https://idp.example', microsoft: { allowedTenants: [tenantA] } },
      'spec.microsoft',
      /only applies/,
    );
  });

  it('accessTokenType: one of AtJwt, NotIdToken, Any; not for github', async () => {
    for (const t of ['AtJwt', 'NotIdToken', 'Any']) {
      const res = await apply(`att-${t.toLowerCase()}`, {
        type: 'oidc',
        issuer: 'https://idp.example',
        accessTokenType: t,
      });
      expect([200, 201], JSON.stringify(res.body)).toContain(res.status);
    }
    await refused(
      'att-bad',
      { type: 'oidc', issuer: 'https://idp.example', accessTokenType: 'IdToken' },
      'spec.accessTokenType',
      /Unsupported value/,
    );
    await refused(
      'att-github',
      { type: 'github', accessTokenType: 'AtJwt', github: { organizations: ['acme'] } },
      'spec.accessTokenType',
      /does not apply to github/,
    );
  });
});
