import { X509Certificate } from 'node:crypto';
import type { Ctx } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Identity } from '../request/identity.js';
import type { CheckInput } from '../request/input.js';
import type { IdentityMethod, MethodResult } from './method.js';
import { tokenHash, VerdictCache } from './verdictCache.js';

type SubjectFrom = NonNullable<CompiledAccessPolicy['clientCertificates']>['subjectFrom'];

interface Parsed {
  readonly notBefore: number;
  readonly notAfter: number;
  readonly names: Readonly<Record<SubjectFrom, string | undefined>>;
  readonly claims: Readonly<Record<string, unknown>>;
}

const MAX_CERT_BYTES = 32_768;

/**
 * The client certificate of an mTLS connection, as Envoy passes it in the CheckRequest
 * (attributes.source.certificate, URL-encoded PEM, with include_peer_certificate). The
 * chain is verified by Envoy's downstream TLS context (require_client_certificate and a
 * trusted CA); this method only reads the name and checks the validity period. A listener
 * that does not verify client certificates must not route to a policy using this method.
 */
export class ClientCertMethod implements IdentityMethod {
  readonly name = 'clientCertificate';
  /** Parsing a certificate costs tens of µs; one client sends the same one on every request. */
  readonly #parsed = new VerdictCache<Parsed | string>(10_000);

  identify(input: CheckInput, ctx: Ctx, policy: CompiledAccessPolicy): MethodResult {
    const spec = policy.clientCertificates;
    if (!spec || !input.peerCertificate) return { kind: 'absent' };
    if (input.peerCertificate.length > MAX_CERT_BYTES)
      return { kind: 'invalid', reason: 'the client certificate is too large' };
    const key = tokenHash(input.peerCertificate);
    let parsed = this.#parsed.get(key, ctx.now);
    if (parsed === undefined) {
      parsed = parse(input.peerCertificate);
      this.#parsed.set(key, parsed, typeof parsed === 'string' ? ctx.now + 60_000 : parsed.notAfter);
    }
    if (typeof parsed === 'string') return { kind: 'invalid', reason: parsed };
    // RFC 5280 §4.1.2.5: outside its validity period a certificate names nobody.
    if (ctx.now < parsed.notBefore || ctx.now > parsed.notAfter)
      return { kind: 'invalid', reason: 'the client certificate is outside its validity period' };
    const name = parsed.names[spec.subjectFrom];
    if (!name) return { kind: 'invalid', reason: `the client certificate has no ${spec.subjectFrom}` };
    const identity: Identity = {
      subject: `mtls:${name}`,
      provider: 'mtls',
      method: 'clientCertificate',
      groups: [],
      roles: [],
      scopes: [],
      claims: parsed.claims,
    };
    return { kind: 'identified', identity };
  }
}

/** The certificate's names and validity, or why it cannot be read. */
export function parse(encoded: string): Parsed | string {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(decodeURIComponent(encoded));
  } catch {
    return 'the client certificate cannot be parsed';
  }
  const notBefore = Date.parse(cert.validFrom);
  const notAfter = Date.parse(cert.validTo);
  // An unreadable validity period must not read as "always valid".
  if (!Number.isFinite(notBefore) || !Number.isFinite(notAfter))
    return 'the client certificate cannot be parsed';
  const san = parseSubjectAltName(cert.subjectAltName ?? '');
  const cn = distinguishedNameValue(cert.subject, 'CN');
  const names = {
    URISAN: san.find(([t]) => t === 'URI')?.[1],
    DNSSAN: san.find(([t]) => t === 'DNS')?.[1],
    CommonName: cn,
  };
  return {
    notBefore,
    notAfter,
    names,
    claims: {
      subject: cert.subject,
      issuer: cert.issuer,
      serialNumber: cert.serialNumber,
      fingerprint256: cert.fingerprint256,
      uris: san.filter(([t]) => t === 'URI').map(([, v]) => v),
      dnsNames: san.filter(([t]) => t === 'DNS').map(([, v]) => v),
      ...(cn ? { commonName: cn } : {}),
    },
  };
}

/**
 * Node's subjectAltName string: `TYPE:value` entries joined by ", ", where a value with a
 * comma, quote or other special character is a JSON string literal (since the fix for
 * CVE-2021-44532, so a crafted SAN cannot pass for two).
 */
export function parseSubjectAltName(s: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const re = /([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/gy;
  for (let m = re.exec(s); m && m[0] !== ''; m = re.exec(s)) {
    let value = m[2]!;
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        return [];
      }
    }
    out.push([m[1]!, value]);
  }
  return out;
}

/** The first value of `attr` in Node's multi-line distinguished name (values quoted as JSON when special). */
function distinguishedNameValue(dn: string, attr: string): string | undefined {
  for (const line of dn.split('\n')) {
    if (!line.startsWith(`${attr}=`)) continue;
    const v = line.slice(attr.length + 1);
    if (!v.startsWith('"')) return v;
    try {
      return JSON.parse(v) as string;
    } catch {
      return undefined;
    }
  }
  return undefined;
}
