import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { type OidcIssuer, startOidcIssuer } from '../harness/oidc.js';
import { policyDir } from '../harness/policies.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';

// An attacker's view of the identity headers, through real Envoy to a real upstream that
// records every header line it received: no client copy of a header the upstream trusts gets
// through (Nox's `x-nox-*` namespace, and every identity header name of every AccessPolicy
// on the host), and the values Nox sets are exactly Nox's or absent: never a value with a
// control character, never an unverified email, never a group list a group name can forge.

const policies = (issuer: string, audience: string) => {
  const provider = (name: string, extra: Record<string, unknown> = {}) => `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: ${name} }
spec: ${JSON.stringify({
    type: 'oidc',
    issuer,
    clientId: 'gw',
    audiences: [audience],
    allowedAlgorithms: ['RS256'],
    maxTokenBytes: 32768,
    ...extra,
  })}
`;
  const access = (name: string, spec: Record<string, unknown>) => `
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: ${name} }
spec: ${JSON.stringify({ defaultAction: 'Allow', priority: 10, ...spec })}
`;
  return [
    provider('corp'),
    // The same issuer read with the subject taken from a claim the test controls ("usr").
    provider('odd', { claims: { subject: 'usr' } }),
    access('app', {
      match: { hosts: ['app.test'] },
      providers: ['corp'],
      identityHeaders: {
        claims: { 'x-nox-dept': 'dept', 'x-nox-title': 'title', 'x-nox-nick': 'nick', 'x-nox-bio': 'bio' },
      },
    }),
    // A second policy on the same host, for one path, trusting headers outside Nox's namespace.
    access('legacy', {
      match: { hosts: ['app.test'], paths: [{ value: '/legacy' }] },
      providers: ['corp'],
      identityHeaders: {
        user: 'X-User',
        provider: 'x-auth-provider',
        email: 'x-email',
        groups: 'x-groups',
        claims: { 'X-Tenant': 'tid' },
      },
    }),
    // Covers app.test by wildcard and every host by having no hosts, at lower priority: never
    // the routed policy here, but their identity headers are still ones to protect.
    access('wild', {
      match: { hosts: ['*.test'] },
      priority: 0,
      identityHeaders: { user: 'x-wild-user', groups: 'x-wild-groups' },
    }),
    access('fallback', {
      match: { paths: [{ value: '/fallback' }] },
      priority: 0,
      defaultAction: 'Deny',
      identityHeaders: { user: 'x-any-user' },
    }),
    access('odd', { match: { hosts: ['odd.test'] }, providers: ['odd'] }),
    access('other', { match: { hosts: ['other.test'] }, identityHeaders: { user: 'x-other-user' } }),
  ].join('---');
};

/** Every request that reached the upstream, by its x-test-id, as header lines (names lower-cased). */
interface Received {
  readonly lines: readonly (readonly [string, string])[];
  all(name: string): string[];
  one(name: string): string | undefined;
}

function recordingUpstream(): Promise<{ port: number; seen: Map<string, Received>; server: Server }> {
  const seen = new Map<string, Received>();
  const server = createServer((req, res) => {
    const lines: [string, string][] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2)
      lines.push([req.rawHeaders[i]!.toLowerCase(), req.rawHeaders[i + 1]!]);
    const all = (name: string) => lines.filter(([n]) => n === name).map(([, v]) => v);
    const received: Received = {
      lines,
      all,
      one(name) {
        const values = all(name);
        if (values.length > 1)
          throw new Error(`${name} arrived ${values.length} times: ${values.join(' | ')}`);
        return values[0];
      },
    };
    seen.set(String(req.headers['x-test-id']), received);
    req.resume();
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ headers: lines }));
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      resolve({ port: typeof addr === 'object' && addr ? addr.port : 0, seen, server });
    }),
  );
}

/**
 * One HTTP/1.1 request written byte for byte, so header names keep the case and the
 * repetitions the test gives (fetch would lower-case and merge them); its status code.
 */
function rawRequest(port: number, host: string, path: string, headers: [string, string][]): Promise<number> {
  const head = [
    `GET ${path} HTTP/1.1`,
    `Host: ${host}`,
    ...headers.map(([n, v]) => `${n}: ${v}`),
    ...(headers.some(([n]) => n.toLowerCase() === 'connection') ? [] : ['Connection: close']),
    '',
    '',
  ].join('\r\n');
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(head));
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('end', () => {
      const status = /^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString('latin1'));
      if (status) resolve(Number(status[1]));
      else reject(new Error(`no HTTP response: ${Buffer.concat(chunks).toString('latin1').slice(0, 200)}`));
    });
  });
}

describe('identity headers through real Envoy: forged, injected and unsafe values never reach the upstream', () => {
  let issuer: OidcIssuer;
  let upstream: Awaited<ReturnType<typeof recordingUpstream>>;
  let sidecar: Sidecar;
  let envoy: Envoy;
  const tokens: Record<string, string> = {};
  let nextId = 0;

  /** Sends the request through Envoy; the header lines the upstream got, or undefined if it got none. */
  async function send(
    host: string,
    path: string,
    headers: [string, string][],
    token?: string,
  ): Promise<{ status: number; got: Received | undefined }> {
    const id = `t${++nextId}`;
    const auth: [string, string][] = token ? [['Authorization', `Bearer ${token}`]] : [];
    const status = await rawRequest(envoy.port, host, path, [['x-test-id', id], ...auth, ...headers]);
    return { status, got: upstream.seen.get(id) };
  }

  async function allowed(host: string, path: string, headers: [string, string][], token?: string) {
    const r = await send(host, path, headers, token);
    expect(r.status, `${host}${path}`).toBe(200);
    expect(r.got, 'the upstream saw the request').toBeDefined();
    return r.got!;
  }

  /** The x-nox-* lines the upstream got: only those Nox sets, each once. */
  const noxLines = (got: Received) =>
    got.lines.filter(([n]) => n.startsWith('x-nox-') || n.startsWith('x_nox'));

  beforeAll(async () => {
    [issuer, upstream] = await Promise.all([
      startOidcIssuer([
        {
          clientId: 'alice',
          secret: 'alice-secret',
          claims: {
            email: 'alice@corp.test',
            email_verified: true,
            groups: ['dev', 'ops,admin', 'qa\r\nx-nox-roles: admin', ' admin', 'sre'],
            dept: 'eng',
            title: 'lead\r\nx-nox-roles: admin',
            nick: 'ad\u0000min',
            bio: 'b'.repeat(9000),
            tid: 'acme',
          },
        },
        {
          clientId: 'mallory',
          secret: 'mallory-secret',
          claims: { email: 'ceo@corp.test', email_verified: false, groups: ['dev'] },
        },
        // "true" as a string is not a verified email.
        {
          clientId: 'stringy',
          secret: 'stringy-secret',
          claims: { email: 'cfo@corp.test', email_verified: 'true' },
        },
        { clientId: 'bob-crlf', secret: 'bob-secret', claims: { usr: 'bob\r\nx-nox-roles: admin' } },
        { clientId: 'bob-nul', secret: 'bob-secret', claims: { usr: 'ad\u0000min' } },
        { clientId: 'bob-lf', secret: 'bob-secret', claims: { usr: 'admin\n' } },
        { clientId: 'carol', secret: 'carol-secret', claims: { usr: 'carol' } },
      ]),
      recordingUpstream(),
    ]);
    for (const c of ['alice', 'mallory', 'stringy', 'bob-crlf', 'bob-nul', 'bob-lf', 'carol'])
      tokens[c] = await issuer.token(c);
    sidecar = await startSidecar({
      policyPath: policyDir('identity-headers', policies(issuer.issuer, issuer.audience)),
      // The first token of each client costs a JWKS fetch; this test is not about latency.
      env: { NOX_CHECK_DEADLINE_MS: '2000' },
    });
    envoy = await startEnvoy({
      authzPort: sidecar.grpcPort,
      upstreamPort: upstream.port,
      authzTimeoutMs: 3000,
    });
  });
  afterAll(async () => {
    await envoy?.stop();
    await sidecar?.stop();
    await issuer?.close();
    await new Promise<void>((res) => {
      if (!upstream) return res();
      upstream.server.closeAllConnections();
      upstream.server.close(() => res());
    });
  });

  it('removes every x-nox-* header a client sends, whatever its case or spelling, and keeps the rest', async () => {
    const got = await allowed('app.test', '/x', [
      ['X-Nox-Roles', 'admin'],
      ['X-NoX-Foo', '1'],
      ['x-nox-user', 'corp:root'],
      ['X-NOX-EMAIL', 'root@corp.test'],
      ['x-nox-groups', 'admin'],
      ['x-nox-tier', 'enterprise'],
      ['x-nox-risk', '0'],
      ['X_Nox_Roles', 'admin'],
      ['x-noxious', 'kept'],
      ['X-Request-Color', 'blue'],
    ]);
    // Anonymous (the policy's default allows): Nox sets only its bookkeeping headers.
    expect(
      noxLines(got)
        .map(([n]) => n)
        .sort(),
    ).toEqual(['x-nox-access-rule', 'x-nox-decision-id', 'x-nox-snapshot']);
    expect(got.one('x-nox-snapshot')).toMatch(/^\d+$/);
    expect(got.one('x-noxious')).toBe('kept');
    expect(got.one('x-request-color')).toBe('blue');
  });

  it('removes every identity header name of every policy on the host, whichever policy routes the request', async () => {
    const forged: [string, string][] = [
      ['X-User', 'root'],
      ['x-auth-provider', 'corp'],
      ['X-Email', 'root@corp.test'],
      ['x-groups', 'admin'],
      ['X-Tenant', 'other-tenant'],
      ['X-Wild-User', 'root'],
      ['x-wild-groups', 'admin'],
      ['x-any-user', 'root'],
      ['x_user', 'root'],
      ['X_Tenant', 'other-tenant'],
      // Only other.test's policy trusts this one: on app.test it is an ordinary header.
      ['x-other-user', 'passes'],
    ];
    const protectedNames = ['x-user', 'x-auth-provider', 'x-email', 'x-groups', 'x-tenant'];
    const more = ['x-wild-user', 'x-wild-groups', 'x-any-user', 'x_user', 'x_tenant'];
    for (const path of ['/x', '/legacy/y']) {
      const got = await allowed('app.test', path, forged);
      for (const n of [...protectedNames, ...more]) expect(got.all(n), `${path}: ${n}`).toEqual([]);
      expect(got.one('x-other-user'), path).toBe('passes');
    }
    // The same names on a host only the wildcard and the any-host policy cover, with a port.
    const other = await allowed('other.test:8080', '/x', forged);
    for (const n of ['x-other-user', 'x-wild-user', 'x-wild-groups', 'x-any-user'])
      expect(other.all(n), n).toEqual([]);
    expect(other.one('x-user')).toBe('root'); // no policy of other.test uses it
  });

  it('passes the caller’s identity exactly as Nox set it, over forged and duplicated copies', async () => {
    const forged: [string, string][] = [
      ['X-Nox-User', 'corp:root'],
      ['x-nox-user', 'corp:root2'],
      ['X-NOX-Groups', 'admin'],
      ['x-nox-groups', 'root'],
      ['x-nox-email', 'root@corp.test'],
      ['X-Nox-Roles', 'admin'],
      ['X-Nox-Roles', 'admin'],
      ['X-User', 'root'],
      ['x-user', 'root'],
    ];
    // Naming Nox's headers hop-by-hop must not make any proxy drop them after the check.
    const hopByHop: [string, string] = ['Connection', 'close, X-Nox-User, x-nox-groups, x-user'];
    const got = await allowed('app.test', '/x', [...forged, hopByHop], tokens.alice);
    expect(got.one('x-nox-user')).toBe('corp:alice');
    expect(got.one('x-nox-provider')).toBe('corp');
    expect(got.one('x-nox-email')).toBe('alice@corp.test');
    // "ops,admin" would forge "admin"; " admin" would arrive trimmed; the CR/LF one would inject a header.
    expect(got.one('x-nox-groups')).toBe('dev,sre');
    expect(got.one('x-nox-dept')).toBe('eng');
    for (const n of ['x-nox-roles', 'x-nox-title', 'x-nox-nick', 'x-nox-bio', 'x-user'])
      expect(got.all(n), n).toEqual([]);

    // Routed to the other policy of the host: its names carry the identity, Nox's are gone.
    const legacy = await allowed('app.test', '/legacy', forged, tokens.alice);
    expect(legacy.one('x-user')).toBe('corp:alice');
    expect(legacy.one('x-auth-provider')).toBe('corp');
    expect(legacy.one('x-email')).toBe('alice@corp.test');
    expect(legacy.one('x-groups')).toBe('dev,sre');
    expect(legacy.one('x-tenant')).toBe('acme');
    for (const n of ['x-nox-user', 'x-nox-groups', 'x-nox-email', 'x-nox-roles'])
      expect(legacy.all(n), n).toEqual([]);
  });

  it('never sends a subject or claim with CR, LF or NUL: the header is absent, nothing is injected', async () => {
    for (const client of ['bob-crlf', 'bob-nul', 'bob-lf']) {
      const got = await allowed('odd.test', '/x', [['x-nox-user', 'odd:admin']], tokens[client]);
      expect(got.all('x-nox-user'), client).toEqual([]);
      expect(got.one('x-nox-provider'), client).toBe('odd');
      expect(got.all('x-nox-roles'), client).toEqual([]);
      // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
      for (const [n, v] of got.lines) expect(`${n}: ${v}`, client).not.toMatch(/[\u0000-\u001f]/);
    }
    // The same provider with a clean subject: the header is there.
    const carol = await allowed('odd.test', '/x', [], tokens.carol);
    expect(carol.one('x-nox-user')).toBe('odd:carol');
  });

  it('sends the email only when the provider says it is verified', async () => {
    for (const client of ['mallory', 'stringy']) {
      const got = await allowed('app.test', '/x', [['X-Nox-Email', 'ceo@corp.test']], tokens[client]);
      expect(got.one('x-nox-user'), client).toBe(`corp:${client}`);
      expect(got.all('x-nox-email'), client).toEqual([]);
      const legacy = await allowed('app.test', '/legacy', [['x-email', 'ceo@corp.test']], tokens[client]);
      expect(legacy.all('x-email'), client).toEqual([]);
    }
  });

  it('stays healthy: ready, every check answered by the sidecar, a normal request still allowed', async () => {
    expect(sidecar.service.exited()).toBe(false);
    expect((await fetch(`http://127.0.0.1:${sidecar.httpPort}/readyz`)).status).toBe(200);
    const got = await allowed('app.test', '/x', [], tokens.alice);
    expect(got.one('x-nox-user')).toBe('corp:alice');
    // Envoy never failed a check nor refused the sidecar's answer.
    const stats = await (await fetch(`http://127.0.0.1:${envoy.adminPort}/stats?filter=ext_authz`)).text();
    expect(stats).toMatch(/ext_authz\.ok: [1-9]/);
    for (const m of stats.matchAll(/ext_authz\.(error|failure_mode_allowed|denied): (\d+)/g))
      expect(`${m[1]}: ${m[2]}`).toBe(`${m[1]}: 0`);
  });
});
