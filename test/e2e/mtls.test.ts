import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { type Issued, Pki } from '../harness/pki.js';
import { policyDir } from '../harness/policies.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { startUpstream, type Upstream } from '../harness/upstream.js';

const spiffe = 'spiffe://nox.test/ns/shop/sa/checkout';

// mTLS client identity through a real Envoy TLS listener: Envoy verifies the client
// certificate in the handshake (chain to the test CA, validity, CRL) and passes it to the
// built sidecar (include_peer_certificate); the AccessPolicy's clientCertificates.subjectFrom
// names the caller, and the upstream sees who it is. Two listeners: one requiring a client
// certificate, one only asking for it (so a client without one reaches Nox, which refuses it).
describe('mTLS client certificates through Envoy', () => {
  let upstream: Upstream;
  let sidecar: Sidecar;
  let strict: Envoy;
  let optional: Envoy;
  let ca: Pki;
  const certs: Record<string, Issued> = {};
  let caPem: string;

  beforeAll(async () => {
    const dir = scratchDir('mtls');
    ca = new Pki(dir, 'ca');
    const other = new Pki(dir, 'other-ca');
    await ca.initCa();
    await other.initCa();
    caPem = readFileSync(ca.caCert, 'utf8');
    const server = await ca.issue('envoy', { cn: 'localhost' }, 'server', ['DNS:localhost', 'IP:127.0.0.1']);
    const sans = [`URI:${spiffe}`, 'DNS:checkout.shop.svc'];
    certs.checkout = await ca.issue('checkout', { cn: 'checkout-cn', o: ['Shop'] }, 'client', sans);
    certs.intruder = await ca.issue('intruder', { cn: 'intruder' }, 'client', [
      'URI:spiffe://nox.test/ns/other/sa/x',
    ]);
    certs.cnOnly = await ca.issue('cn-only', { cn: 'batch-job' }, 'client');
    // Same names as checkout, from a CA Envoy does not trust.
    certs.foreign = await other.issue('foreign', { cn: 'checkout-cn' }, 'client', sans);
    certs.revoked = await ca.issue('revoked', { cn: 'checkout-cn' }, 'client', sans);
    const day = 86_400_000;
    certs.expired = await ca.issue('expired', { cn: 'checkout-cn' }, 'client', sans, {
      notBefore: new Date(Date.now() - 30 * day),
      notAfter: new Date(Date.now() - day),
    });
    await ca.revoke(certs.revoked.cert);
    const crl = await ca.crl();

    const policy = (name: string, subjectFrom: string, when: string) => `---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: ${name} }
spec:
  match: { paths: [{ value: /${name} }] }
  clientCertificates: { subjectFrom: ${subjectFrom} }
  rules: [{ name: in, action: Allow, when: ${when} }]
`;
    const yaml = [
      policy('uri', 'URISAN', `{ subjects: ["mtls:${spiffe}"] }`),
      policy('dns', 'DNSSAN', '{ authenticated: Authenticated }'),
      policy('cn', 'CommonName', '{ authenticated: Authenticated }'),
    ].join('');
    upstream = await startUpstream();
    sidecar = await startSidecar({ policyPath: policyDir('mtls', yaml) });
    const tls = { certChain: server.cert, privateKey: server.key, clientCa: ca.caCert, crl };
    strict = await startEnvoy({ authzPort: sidecar.grpcPort, upstreamPort: upstream.port, tls });
    optional = await startEnvoy({
      authzPort: sidecar.grpcPort,
      upstreamPort: upstream.port,
      tls: { ...tls, requireClientCertificate: false },
    });
  });
  afterAll(async () => {
    await strict?.stop();
    await optional?.stop();
    await sidecar?.stop();
    await upstream?.close();
  });

  type Outcome =
    | { kind: 'response'; status: number; headers: Record<string, unknown>; body: string }
    | { kind: 'tls-refused'; code: string };

  /** One HTTPS request over a new connection, with `client`'s certificate (or none). */
  const get = (envoy: Envoy, path: string, client?: Issued, headers: Record<string, string> = {}) =>
    new Promise<Outcome>((resolve) => {
      const req = request(
        `${envoy.url}${path}`,
        {
          ca: caPem,
          servername: 'localhost',
          agent: false,
          headers,
          ...(client ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}),
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            body += c;
          });
          res.on('end', () =>
            resolve({ kind: 'response', status: res.statusCode ?? 0, headers: res.headers, body }),
          );
        },
      );
      // With TLS 1.3 the client finishes its handshake first; Envoy's refusal of its
      // certificate arrives as an alert (or a reset) when the request is under way.
      req.on('error', (e: NodeJS.ErrnoException) =>
        resolve({ kind: 'tls-refused', code: e.code ?? e.message }),
      );
      req.end();
    });

  /** Envoy's counters: TLS verification failures of its listener, and calls to the sidecar. */
  const stats = async (envoy: Envoy) => {
    const text = await (await fetch(`http://127.0.0.1:${envoy.adminPort}/stats`)).text();
    const sum = (suffix: string) =>
      text
        .split('\n')
        .filter((l) => l.split(':')[0]!.endsWith(suffix))
        .reduce((n, l) => n + Number(l.split(':')[1]), 0);
    return {
      noCert: sum('.ssl.fail_verify_no_cert'),
      verifyError: sum('.ssl.fail_verify_error'),
      authzCalls: sum('cluster.nox_authz.upstream_rq_total'),
    };
  };

  /** The request fails in the TLS handshake, Envoy counts why, and neither Nox nor the upstream sees it. */
  const refusedByEnvoy = async (
    envoy: Envoy,
    client: Issued | undefined,
    counter: 'noCert' | 'verifyError',
  ) => {
    const before = await stats(envoy);
    const seen = upstream.seen.length;
    const out = await get(envoy, '/cn', client);
    expect(out.kind, JSON.stringify(out)).toBe('tls-refused');
    await waitUntil(`envoy ${counter}`, async () => (await stats(envoy))[counter] > before[counter], 5_000);
    expect((await stats(envoy)).authzCalls).toBe(before.authzCalls);
    expect(upstream.seen.length).toBe(seen);
  };

  it('names the caller by URI SAN, DNS SAN or CN as each policy says; the upstream sees x-nox-user', async () => {
    for (const [path, user] of [
      ['/uri', `mtls:${spiffe}`],
      ['/dns', 'mtls:checkout.shop.svc'],
      ['/cn', 'mtls:checkout-cn'],
    ] as const) {
      // A client's own identity header never reaches the upstream.
      const out = await get(strict, path, certs.checkout, { 'x-nox-user': 'mtls:admin' });
      expect(out, path).toMatchObject({ kind: 'response', status: 200 });
      const seen = upstream.seen.at(-1)!;
      expect(seen.url).toBe(path);
      expect(seen.headers['x-nox-user'], path).toBe(user);
      expect(seen.headers['x-nox-provider']).toBe('mtls');
    }
    // The CN is the subject only where the policy says so.
    expect(await get(strict, '/cn', certs.cnOnly)).toMatchObject({ status: 200 });
    expect(upstream.seen.at(-1)!.headers['x-nox-user']).toBe('mtls:batch-job');
  });

  it('Nox refuses a trusted certificate the policy does not accept: another SPIFFE id, no URI SAN', async () => {
    const seen = upstream.seen.length;
    const intruder = await get(strict, '/uri', certs.intruder);
    expect(intruder).toMatchObject({ kind: 'response', status: 403 });
    expect((intruder as { headers: Record<string, unknown> }).headers['x-nox-error']).toBe('ACCESS_DENIED');
    const noUri = await get(strict, '/uri', certs.cnOnly);
    expect(noUri).toMatchObject({ kind: 'response', status: 401 });
    expect(JSON.parse((noUri as { body: string }).body)).toMatchObject({
      error: 'UNAUTHENTICATED',
      reason: expect.stringContaining('no URISAN'),
    });
    expect(upstream.seen.length).toBe(seen);
  });

  it('Envoy refuses, in the handshake, a client without a certificate where one is required', async () => {
    await refusedByEnvoy(strict, undefined, 'noCert');
  });

  it('Nox refuses a client without a certificate where Envoy only asks for one', async () => {
    const before = await stats(optional);
    const seen = upstream.seen.length;
    const out = await get(optional, '/cn');
    // No certificate is no credential: an anonymous caller, whom no rule of the policy allows.
    expect(out).toMatchObject({ kind: 'response', status: 403 });
    expect((out as { headers: Record<string, unknown> }).headers['x-nox-error']).toBe('ACCESS_DENIED');
    expect((await stats(optional)).authzCalls).toBe(before.authzCalls + 1);
    expect(upstream.seen.length).toBe(seen);
    // The same listener still identifies a client that sends one.
    expect(await get(optional, '/dns', certs.checkout)).toMatchObject({ status: 200 });
    expect(upstream.seen.at(-1)!.headers['x-nox-user']).toBe('mtls:checkout.shop.svc');
  });

  it('Envoy refuses certificates of another CA, revoked (CRL) or expired, on both listeners', async () => {
    for (const envoy of [strict, optional]) {
      await refusedByEnvoy(envoy, certs.foreign, 'verifyError');
      await refusedByEnvoy(envoy, certs.revoked, 'verifyError');
      await refusedByEnvoy(envoy, certs.expired, 'verifyError');
    }
    // And the sidecar is still healthy and answering.
    expect(await get(strict, '/dns', certs.checkout)).toMatchObject({ status: 200 });
    expect((await fetch(`http://127.0.0.1:${sidecar.httpPort}/readyz`)).status).toBe(200);
  });
});
