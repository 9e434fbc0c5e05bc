import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkContext, checkInput, routedPolicy } from '../../test/harness/checks.js';
import { decodeCheckRequest } from '../stages/decode.js';
import { ClientCertMethod, parseSubjectAltName } from './clientCertMethod.js';

const exec = promisify(execFile);
const input = (peerCertificate?: string) =>
  checkInput(peerCertificate !== undefined ? { peerCertificate } : {});
const ctxAt = (now: number) => checkContext({ now });
/** A check made now: certificates are minted in beforeAll, so the clock is read at check time. */
const ctx = () => ctxAt(Date.now());
const policy = (subjectFrom?: 'URISAN' | 'DNSSAN' | 'CommonName') =>
  routedPolicy(subjectFrom ? { clientCertificates: { subjectFrom } } : {}, 'AccessPolicy/ns/mtls');

describe('ClientCertMethod', () => {
  let dir: string;
  /** URL-encoded PEMs, as Envoy sends them. */
  const certs: Record<string, string> = {};
  const method = new ClientCertMethod();

  /** A client certificate signed by the test CA; `sans` in openssl's [alt] section syntax. */
  const issue = async (name: string, cn: string, sans: string[]) => {
    const cnf = join(dir, `${name}.cnf`);
    writeFileSync(
      cnf,
      [
        '[req]',
        'distinguished_name = dn',
        '[dn]',
        '[v3]',
        'basicConstraints = critical,CA:FALSE',
        'extendedKeyUsage = clientAuth',
        ...(sans.length ? ['subjectAltName = @alt', '[alt]', ...sans] : []),
        '',
      ].join('\n'),
    );
    const key = join(dir, `${name}.key`);
    const csr = join(dir, `${name}.csr`);
    const crt = join(dir, `${name}.crt`);
    await exec(
      'openssl',
      ['req', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'].concat([
        '-keyout',
        key,
        '-out',
        csr,
        '-subj',
        `/O=Nox Test/CN=${cn}`,
        '-config',
        cnf,
      ]),
    );
    await exec(
      'openssl',
      ['x509', '-req', '-in', csr, '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key')].concat([
        '-set_serial',
        '0x1234',
        '-days',
        '30',
        '-extfile',
        cnf,
        '-extensions',
        'v3',
        '-out',
        crt,
      ]),
    );
    certs[name] = encodeURIComponent(readFileSync(crt, 'utf8'));
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nox-mtls-'));
    await exec(
      'openssl',
      ['req', '-x509', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'].concat([
        '-keyout',
        join(dir, 'ca.key'),
        '-out',
        join(dir, 'ca.crt'),
        '-days',
        '30',
        '-subj',
        '/CN=nox-test-ca',
      ]),
    );
    await Promise.all([
      issue('workload', 'payments', [
        'URI.1 = spiffe://cluster.local/ns/shop/sa/payments',
        'DNS.1 = payments.shop.svc',
      ]),
      issue('dnsOnly', 'reports', ['DNS.1 = reports.internal', 'DNS.2 = reports-alt.internal']),
      issue('cnOnly', 'legacy-client', []),
      // A comma inside a SAN must not let one entry pass for two.
      issue('tricky', 'tricky', ['URI.1 = spiffe://x/a,DNS:admin.internal']),
    ]);
  }, 60_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('names the caller by the URI SAN, the DNS SAN or the CN, as the policy says', () => {
    const subject = (cert: string, from: 'URISAN' | 'DNSSAN' | 'CommonName') => {
      const r = method.identify(input(certs[cert]), ctx(), policy(from));
      return r.kind === 'identified' ? r.identity.subject : r;
    };
    expect(subject('workload', 'URISAN')).toBe('mtls:spiffe://cluster.local/ns/shop/sa/payments');
    expect(subject('workload', 'DNSSAN')).toBe('mtls:payments.shop.svc');
    expect(subject('workload', 'CommonName')).toBe('mtls:payments');
    expect(subject('dnsOnly', 'DNSSAN')).toBe('mtls:reports.internal');
    expect(subject('cnOnly', 'CommonName')).toBe('mtls:legacy-client');

    const r = method.identify(input(certs.workload), ctx(), policy('URISAN'));
    expect(r.kind === 'identified' && r.identity).toMatchObject({
      provider: 'mtls',
      method: 'clientCertificate',
      claims: {
        issuer: 'CN=nox-test-ca',
        serialNumber: '1234',
        uris: ['spiffe://cluster.local/ns/shop/sa/payments'],
        dnsNames: ['payments.shop.svc'],
        commonName: 'payments',
      },
    });
  });

  it('is invalid when the chosen name is missing', () => {
    expect(method.identify(input(certs.cnOnly), ctx(), policy('URISAN'))).toEqual({
      kind: 'invalid',
      reason: 'the client certificate has no URISAN',
    });
    expect(method.identify(input(certs.dnsOnly), ctx(), policy('URISAN')).kind).toBe('invalid');
  });

  it('reads a SAN holding a comma as one name', () => {
    expect(method.identify(input(certs.tricky), ctx(), policy('DNSSAN')).kind).toBe('invalid');
    const r = method.identify(input(certs.tricky), ctx(), policy('URISAN'));
    expect(r.kind === 'identified' && r.identity.subject).toBe('mtls:spiffe://x/a,DNS:admin.internal');
    expect(parseSubjectAltName('DNS:a.b, URI:"x,DNS:y", IP Address:10.0.0.1')).toEqual([
      ['DNS', 'a.b'],
      ['URI', 'x,DNS:y'],
      ['IP Address', '10.0.0.1'],
    ]);
  });

  it('is invalid outside the validity period (RFC 5280 §4.1.2.5)', () => {
    const day = 86_400_000;
    expect(method.identify(input(certs.workload), ctxAt(Date.now() + 31 * day), policy('URISAN'))).toEqual({
      kind: 'invalid',
      reason: 'the client certificate is outside its validity period',
    });
    expect(method.identify(input(certs.workload), ctxAt(Date.now() - day), policy('URISAN')).kind).toBe(
      'invalid',
    );
  });

  it('is invalid for garbage, and absent without a certificate or a clientCertificates policy', () => {
    expect(method.identify(input('not%20a%20cert'), ctx(), policy('CommonName'))).toEqual({
      kind: 'invalid',
      reason: 'the client certificate cannot be parsed',
    });
    expect(method.identify(input('%E0%A4%A'), ctx(), policy('CommonName')).kind).toBe('invalid');
    expect(method.identify(input('x'.repeat(40_000)), ctx(), policy('CommonName')).kind).toBe('invalid');
    expect(method.identify(input(), ctx(), policy('CommonName'))).toEqual({ kind: 'absent' });
    expect(method.identify(input(certs.workload), ctx(), policy())).toEqual({ kind: 'absent' });
  });

  it('gets the certificate from the CheckRequest Envoy sends (attributes.source.certificate)', () => {
    const http = { method: 'GET', host: 'api.test', path: '/x', headers: {} };
    const decoded = decodeCheckRequest({
      attributes: { request: { http }, source: { certificate: certs.cnOnly } },
    });
    expect(decoded.peerCertificate).toBe(certs.cnOnly);
    const r = method.identify(decoded, ctx(), policy('CommonName'));
    expect(r.kind === 'identified' && r.identity.subject).toBe('mtls:legacy-client');
    expect(decodeCheckRequest({ attributes: { request: { http } } }).peerCertificate).toBeUndefined();
  });
});
