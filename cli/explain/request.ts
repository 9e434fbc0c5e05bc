import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ICheckRequest } from '../../proto/envoy.js';

/**
 * A request to explain, as a user writes it: a URL or a host and path, a method, headers, a
 * token, the client's address and certificate. One per line in a file given to
 * `kubectl nox explain --requests` (JSON Lines).
 */
export interface RequestSpec {
  readonly method?: string;
  /** `https://api.example.com/api/x?y=1`; or host and path. */
  readonly url?: string;
  readonly host?: string;
  readonly path?: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Sent as `Authorization: Bearer <token>`. */
  readonly token?: string;
  /** The downstream address Envoy saw. */
  readonly sourceIp?: string;
  /** The client certificate Envoy verified, PEM (or `@file`). */
  readonly clientCert?: string;
  /** An id to match this request with its explanation (default: a new UUID). */
  readonly id?: string;
}

export class BadRequestSpec extends Error {
  override readonly name = 'BadRequestSpec';
}

/**
 * The CheckRequest Envoy would send for this request (the fields Nox reads, shaped as Envoy
 * fills them: lower-case header names, `:authority` and `:path` among them), so that explain
 * decodes it with the sidecar's own decoder.
 */
export function toCheckRequest(spec: RequestSpec): ICheckRequest {
  let host = spec.host;
  let path = spec.path;
  let scheme = 'https';
  if (spec.url !== undefined) {
    let u: URL;
    try {
      u = new URL(spec.url);
    } catch {
      throw new BadRequestSpec(`url: ${JSON.stringify(spec.url)} is not an absolute URL`);
    }
    host ??= u.host;
    // The path as written (URL would resolve dot segments and encodings Nox must see as sent).
    path ??= spec.url.slice(spec.url.indexOf(u.host) + u.host.length) || '/';
    scheme = u.protocol.slice(0, -1);
  }
  if (!host) throw new BadRequestSpec('host: give --url or --host');
  path ??= '/';
  const method = (spec.method ?? 'GET').toUpperCase();
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(spec.headers ?? {})) headers[k.toLowerCase()] = v;
  if (spec.token !== undefined) headers.authorization = `Bearer ${spec.token}`;
  const id = spec.id ?? headers['x-request-id'] ?? randomUUID();
  Object.assign(headers, {
    ':authority': host,
    ':method': method,
    ':path': path,
    ':scheme': scheme,
    'x-request-id': id,
  });
  const cert = spec.clientCert?.startsWith('@')
    ? readFileSync(spec.clientCert.slice(1), 'utf8')
    : spec.clientCert;
  return {
    attributes: {
      source: {
        address: { socketAddress: { address: spec.sourceIp ?? '127.0.0.1', portValue: 40000 } },
        ...(cert ? { certificate: encodeURIComponent(cert) } : {}),
      },
      request: {
        http: { id, method, host, path, scheme, protocol: 'HTTP/1.1', headers },
      },
    },
  };
}

/** `Name: value` flags → headers; a flag without a colon is an error, not a header with no value. */
export function parseHeaderFlags(flags: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of flags) {
    const colon = f.indexOf(':');
    if (colon <= 0) throw new BadRequestSpec(`--header ${JSON.stringify(f)}: expected "Name: value"`);
    out[f.slice(0, colon).trim().toLowerCase()] = f.slice(colon + 1).trim();
  }
  return out;
}
