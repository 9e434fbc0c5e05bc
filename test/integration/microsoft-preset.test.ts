import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpCheck, SidecarClient } from '../harness/grpcClient.js';
import { scratchDir } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';

// The microsoft preset against a local stand-in for Entra ID's documented token shape
// (v2.0: iss https://login.microsoftonline.com/<tid>/v2.0, tid, oid, preferred_username, scp):
// a single-tenant provider accepts its tenant only; a multi-tenant one ("organizations")
// accepts any tenant whose iss matches the token's own tid.
describe('OAuth2Provider type microsoft', () => {
  let server: Server;
  let base: string;
  let sidecar: Sidecar;
  let client: SidecarClient;
  let sign: (claims: Record<string, unknown>) => Promise<string>;
  const tenantA = '11111111-1111-1111-1111-111111111111';
  const tenantB = '22222222-2222-2222-2222-222222222222';

  beforeAll(async () => {
    const { privateKey, publicKey } = await generateKeyPair('RS256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'entra-1', alg: 'RS256', use: 'sig' };
    server = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(req.url?.endsWith('/keys') ? JSON.stringify({ keys: [jwk] }) : '{}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    base = `http://127.0.0.1:${port}`;
    sign = (claims) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: 'entra-1' })
        .setAudience('api://nox')
        .setIssuedAt()
        .setExpirationTime('10m')
        .sign(privateKey);
    const dir = scratchDir('entra');
    // Issuer and JWKS overridden to the stand-in; everything else comes from the preset.
    writeFileSync(
      join(dir, 'p.yaml'),
      `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: entra-single }
spec:
  type: microsoft
  tenant: ${tenantA}
  clientId: nox
  audiences: [api://nox]
  issuer: ${base}/${tenantA}/v2.0
  endpoints: { jwks: ${base}/${tenantA}/discovery/v2.0/keys }
---
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: entra-multi }
spec:
  type: microsoft
  tenant: organizations
  clientId: nox
  audiences: [api://nox]
  issuer: "${base}/{tenantid}/v2.0"
  endpoints: { jwks: ${base}/organizations/discovery/v2.0/keys }
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: single }
spec:
  match: { paths: [{ value: /single }] }
  providers: [entra-single]
  rules: [{ name: in, action: Allow, when: { authenticated: Authenticated } }]
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: multi }
spec:
  match: { paths: [{ value: /multi }] }
  providers: [entra-multi]
  rules: [{ name: in, action: Allow, when: { authenticated: Authenticated } }]
`,
    );
    // A first check fetches discovery and JWKS inside the check; a busy machine must not turn
    // that into a 503 under the production deadline (150 ms).
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
    return {
      status: res.deniedResponse?.status?.code ?? 200,
      user: h('x-nox-user'),
      email: h('x-nox-email'),
    };
  };
  const entraToken = (tid: string, oid: string) =>
    sign({
      iss: `${base}/${tid}/v2.0`,
      tid,
      oid,
      sub: `pairwise-${oid}`,
      preferred_username: `${oid}@contoso.example`,
      scp: 'api.read',
    });

  it('single tenant: accepts its tenant, names the user by oid, refuses another tenant', async () => {
    expect(await check('/single', await entraToken(tenantA, 'alice'))).toEqual({
      status: 200,
      user: 'entra-single:alice',
      // Entra's email claim is not verified (no email_verified), so it is not passed upstream.
      email: undefined,
    });
    expect((await check('/single', await entraToken(tenantB, 'bob'))).status).toBe(401);
  });

  it('multi-tenant: accepts any tenant whose iss matches its own tid, never a mismatch', async () => {
    expect((await check('/multi', await entraToken(tenantA, 'alice'))).status).toBe(200);
    expect((await check('/multi', await entraToken(tenantB, 'bob'))).user).toBe('entra-multi:bob');
    const forged = await sign({ iss: `${base}/${tenantA}/v2.0`, tid: tenantB, oid: 'eve', sub: 'eve' });
    expect((await check('/multi', forged)).status).toBe(401);
  });
});
