import type { ICheckRequest } from '../../proto/envoy.js';
import type { CheckInput } from '../request/input.js';

type CheckRequest = ICheckRequest;

export class MalformedRequest extends Error {
  override readonly name = 'MalformedRequest';
}

/**
 * Envoy's CheckRequest → CheckInput. Every field the decision depends on must be present;
 * a missing one is a MalformedRequest (a deny), never a default that could allow.
 */
export function decodeCheckRequest(req: CheckRequest): CheckInput {
  const http = req.attributes?.request?.http;
  if (!http) throw new MalformedRequest('attributes.request.http is missing');
  const method = http.method;
  if (!method) throw new MalformedRequest('attributes.request.http.method is missing');
  const host = http.host;
  if (!host) throw new MalformedRequest('attributes.request.http.host is missing');
  const rawPath = http.path;
  if (!rawPath) throw new MalformedRequest('attributes.request.http.path is missing');
  const { path, query } = normalizePath(rawPath);
  const src = req.attributes?.source?.address?.socketAddress?.address ?? '';
  const headers = (http.headers ?? {}) as Record<string, string>;
  const peerCertificate = req.attributes?.source?.certificate;
  return {
    method,
    host: canonicalHost(host),
    path,
    query,
    scheme: http.scheme ?? '',
    protocol: http.protocol ?? '',
    headers,
    sourceAddress: src,
    requestId: http.id ?? headers['x-request-id'] ?? '',
    ...(peerCertificate ? { peerCertificate } : {}),
  };
}

/**
 * Lower case, and without the trailing dot of a fully qualified name ("api.example.com." is
 * the host "api.example.com" to DNS, to TLS and to every upstream, so to policies too).
 */
export function canonicalHost(host: string): string {
  const h = host.toLowerCase();
  if (h.startsWith('[')) return h;
  const colon = h.lastIndexOf(':');
  const name = colon === -1 ? h : h.slice(0, colon);
  const port = colon === -1 ? '' : h.slice(colon);
  return name.length > 1 && name.endsWith('.') ? name.slice(0, -1) + port : h;
}

const unreserved = /%(2[DdEe]|3[0-9]|4[1-9A-Fa-f]|5[0-9Aa]|5[Ff]|6[1-9A-Fa-f]|7[0-9Aa]|7[Ee])/g;

/**
 * The path as policies see it: query split off, percent-encoded unreserved characters
 * decoded (so "/%61dmin" is "/admin"), duplicate slashes merged and dot segments
 * resolved (RFC 3986 §5.2.4). Encoded "/" or "\" and control characters are malformed:
 * upstreams disagree about them, and a policy cannot be sure what the upstream sees.
 */
export function normalizePath(raw: string): { path: string; query: string } {
  const q = raw.search(/[?#]/);
  const pathPart = q === -1 ? raw : raw.slice(0, q);
  const query = q === -1 || raw[q] === '#' ? '' : raw.slice(q + 1).split('#')[0]!;
  if (!pathPart.startsWith('/')) throw new MalformedRequest('path must start with "/"');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
  if (/%(2[Ff]|5[Cc]|00)|[\u0000-\u001f\u007f\\]/.test(pathPart)) {
    throw new MalformedRequest('path contains an encoded slash, backslash or control character');
  }
  const decoded = pathPart.replace(unreserved, (m) => String.fromCharCode(Number.parseInt(m.slice(1), 16)));
  const out: string[] = [];
  for (const seg of decoded.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      out.pop();
      continue;
    }
    out.push(seg);
  }
  const trailing = decoded.endsWith('/') && out.length > 0 ? '/' : '';
  return { path: `/${out.join('/')}${trailing}`, query };
}
