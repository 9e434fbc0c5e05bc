import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { OpaqueTokenMethod } from '../../sidecar/identity/opaqueTokenMethod.js';
import { compileSnapshot } from '../../sidecar/policy/compile.js';
import type { Snapshot } from '../../sidecar/policy/snapshot.js';
import { DirSecretStore } from '../../sidecar/secrets/dirSecretStore.js';
import { checkContext, checkInput, routedPolicy } from '../harness/checks.js';
import { waitUntil } from '../harness/process.js';

const log = createLogger('opaque-token-test', { level: 'silent' });
const AUDIENCE = 'https://api.nox.test';
const clients = [
  { client_id: 'nox-gateway', client_secret: 'gateway-secret' }, // the resource server: introspects
  { client_id: 'billing-job', client_secret: 'billing-secret' },
  { client_id: 'short-lived', client_secret: 'short-secret' },
];

const input = (authorization?: string) => checkInput(authorization ? { headers: { authorization } } : {});

/** A real oidc-provider issuing opaque access tokens (client credentials), with RFC 7662 introspection and RFC 7009 revocation. */
async function startIssuer(): Promise<{ issuer: string; server: Server; introspections: () => number }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({
      ...c,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    })),
    jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: 'k1', alg: 'RS256', use: 'sig' }] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: 'api read', audience: AUDIENCE, accessTokenFormat: 'opaque' }),
      },
    },
    ttl: {
      ClientCredentials: (_ctx: unknown, _token: unknown, client: { clientId: string }) =>
        client.clientId === 'short-lived' ? 2 : 3600,
    },
  } as never);
  let count = 0;
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.url?.startsWith('/token/introspection')) count++;
    callback(req, res);
  });
  return { issuer, server, introspections: () => count };
}

async function clientToken(issuer: string, clientId: string, secret: string): Promise<string> {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`,
    },
    body: 'grant_type=client_credentials&scope=api',
  });
  const body = (await res.json()) as { access_token?: string };
  if (!body.access_token) throw new Error(`no token: ${JSON.stringify(body)}`);
  return body.access_token;
}

describe('OpaqueTokenMethod against oidc-provider (RFC 7662)', () => {
  let op: Awaited<ReturnType<typeof startIssuer>>;
  let secretsDir: string;
  let secrets: DirSecretStore;
  let snapshot: Snapshot;
  const method = new OpaqueTokenMethod(
    (() => {
      secretsDir = mkdtempSync(join(tmpdir(), 'nox-opaque-'));
      secrets = new DirSecretStore({ dir: secretsDir, log, pollMs: 100 });
      return secrets;
    })(),
  );
  const ctx = () => checkContext({ snapshot });
  const policy = (...providers: string[]) => routedPolicy({ providers });
  const identify = (token: string, ...providers: string[]) =>
    method.identify(input(`Bearer ${token}`), ctx(), policy(...providers));
  const token = (clientId = 'billing-job') =>
    clientToken(op.issuer, clientId, clients.find((c) => c.client_id === clientId)!.client_secret);

  beforeAll(async () => {
    op = await startIssuer();
    for (const [name, value] of [
      ['sso-oauth', 'gateway-secret'],
      ['wrong-oauth', 'not-the-secret'],
    ] as const) {
      mkdirSync(join(secretsDir, 'team-a', name), { recursive: true });
      writeFileSync(join(secretsDir, 'team-a', name, 'client-secret'), `${value}\n`);
    }
    await secrets.start();
    const provider = (name: string, spec: Record<string, unknown>) => ({
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'OAuth2Provider',
      metadata: { name, namespace: 'team-a' },
      spec: {
        type: 'oidc',
        issuer: op.issuer,
        clientId: 'nox-gateway',
        clientSecretRef: { name: 'sso-oauth', key: 'client-secret' },
        ...spec,
      },
      origin: 'test',
    });
    snapshot = compileSnapshot(
      {
        resources: [
          provider('sso', {}), // introspection endpoint from discovery
          provider('sso-explicit', {
            endpoints: { introspection: `${op.issuer}/token/introspection` },
            audiences: [AUDIENCE],
          }),
          provider('sso-other-aud', { audiences: ['https://someone-else.test'] }),
          provider('sso-wrong-secret', { clientSecretRef: { name: 'wrong-oauth', key: 'client-secret' } }),
          provider('sso-no-secret', { clientSecretRef: { name: 'missing', key: 'client-secret' } }),
          provider('sso-down', {
            issuer: 'http://127.0.0.1:9',
            endpoints: { introspection: 'http://127.0.0.1:9/introspect' },
          }),
        ],
        problems: [],
      },
      undefined,
      1,
    );
    expect(snapshot.rejected).toEqual([]);
    method.onSnapshot(snapshot);
  });
  afterAll(async () => {
    await secrets.stop();
    rmSync(secretsDir, { recursive: true, force: true });
    op.server.closeAllConnections();
    op.server.close();
  });

  it('identifies an active opaque token, by discovery or by the configured endpoint', async () => {
    const t = await token();
    expect(t.split('.')).toHaveLength(1); // opaque, not a JWT
    for (const provider of ['sso', 'sso-explicit']) {
      const r = await identify(t, provider);
      expect(r.kind).toBe('identified');
      if (r.kind !== 'identified') return;
      expect(r.identity).toMatchObject({
        subject: `${provider}:billing-job`,
        provider,
        method: 'opaque',
        clientId: 'billing-job',
        scopes: ['api'],
        claims: { active: true, iss: op.issuer, aud: AUDIENCE },
      });
    }
  });

  it('asks the provider once for a burst of requests with one new token, then serves from the cache', async () => {
    const t = await token();
    const before = op.introspections();
    const results = await Promise.all(Array.from({ length: 30 }, () => identify(t, 'sso')));
    expect(results.every((r) => r.kind === 'identified')).toBe(true);
    await identify(t, 'sso');
    expect(op.introspections() - before).toBe(1);
  });

  it('rejects an unknown token as inactive, a token for another audience, and caches the rejection', async () => {
    const before = op.introspections();
    expect(await identify('no-such-token-abcdefghijklmnop', 'sso')).toEqual({
      kind: 'invalid',
      reason: 'invalid token: inactive',
    });
    expect((await identify('no-such-token-abcdefghijklmnop', 'sso')).kind).toBe('invalid');
    expect(op.introspections() - before).toBe(1);
    expect(await identify(await token(), 'sso-other-aud')).toEqual({
      kind: 'invalid',
      reason: 'invalid token: unexpected audience',
    });
  });

  it('stops accepting a token revoked at the provider once the cache period is over', async () => {
    const short = new OpaqueTokenMethod(secrets, { maxCacheMs: 300 });
    short.onSnapshot(snapshot);
    const t = await token();
    const cachedFrom = Date.now();
    expect((await short.identify(input(`Bearer ${t}`), ctx(), policy('sso'))).kind).toBe('identified');
    const res = await fetch(`${op.issuer}/token/revocation`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from('billing-job:billing-secret').toString('base64')}`,
      },
      body: new URLSearchParams({ token: t }).toString(),
    });
    expect(res.status).toBe(200);
    // The signal: the revocation shows. Not before the cache period (300 ms) is over.
    const revokedAt = Date.now();
    await waitUntil(
      'the revocation to show',
      async () => (await short.identify(input(`Bearer ${t}`), ctx(), policy('sso'))).kind === 'invalid',
      5000,
      { intervalMs: 20 },
    );
    expect(Date.now() - cachedFrom).toBeGreaterThanOrEqual(300);
    expect(Date.now() - revokedAt).toBeLessThan(5000);
    expect(await short.identify(input(`Bearer ${t}`), ctx(), policy('sso'))).toEqual({
      kind: 'invalid',
      reason: 'invalid token: inactive',
    });
  });

  it('never trusts a cached token past its exp', async () => {
    const issuedBefore = Math.floor(Date.now() / 1000);
    const t = await token('short-lived'); // expires in 2 s
    expect((await identify(t, 'sso')).kind).toBe('identified');
    // The signal: the cached token refused. Not before its exp (whole seconds after issue).
    await waitUntil(
      'the token to be refused',
      async () => (await identify(t, 'sso')).kind === 'invalid',
      5000,
      {
        intervalMs: 50,
      },
    );
    expect(Date.now()).toBeGreaterThanOrEqual((issuedBefore + 2) * 1000);
  });

  it('is unavailable, never anonymous, when the provider or its client secret cannot be used', async () => {
    const t = await token();
    expect((await identify(t, 'sso-wrong-secret')).kind).toBe('unavailable'); // introspection answers 401
    const missing = await identify(t, 'sso-no-secret');
    expect(missing.kind).toBe('unavailable');
    expect(JSON.stringify((missing as { cause: Error }).cause.message)).not.toContain('gateway-secret');
    expect((await identify(t, 'sso-down')).kind).toBe('unavailable');
    // With several providers the first that knows the token names it, whatever the others say.
    expect((await identify(t, 'sso-down', 'sso')).kind).toBe('identified');
  });

  it('leaves JWTs to the JWT method, and is absent without a token or an introspecting provider', async () => {
    const jwtLike = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln';
    const before = op.introspections();
    expect(await identify(jwtLike, 'sso')).toEqual({ kind: 'absent' });
    expect(op.introspections()).toBe(before);
    expect(await method.identify(input(), ctx(), policy('sso'))).toEqual({ kind: 'absent' });
    expect(await identify(await token(), 'unknown-provider')).toEqual({ kind: 'absent' });
  });
});
