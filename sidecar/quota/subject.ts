import { createHash } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';

/**
 * The quota subject's id in Redis keys, usage rollups and overrides: a hash of its parts
 * ("User=<provider>:<sub>", "ApiKey=apikey:<namespace>/<secret>", ...), so no user id or key
 * is stored in clear. The admin API computes the same hash when an operator names a subject.
 */
export function subjectHash(parts: readonly string[]): string {
  return createHash('sha256').update(parts.join('\u0000')).digest('base64url').slice(0, 22);
}

/** "QuotaPolicy/ns/name" → "ns/name", the policy's name in rollups and overrides. */
export function policyName(key: string): string {
  return key.slice(key.indexOf('/') + 1);
}

/**
 * The SourceIP part of a quota subject, from the address Envoy observed: an IPv4 address as
 * is; an IPv4-mapped or IPv4-compatible IPv6 address as its IPv4 address (one client, one
 * bucket, whichever socket family accepted it); any other IPv6 address as its /64 prefix
 * ("2001:db8:0:1::/64"), since one host is routinely given a whole /64 and could otherwise
 * take a fresh bucket per address (RFC 6177; the /64 is what Cloudflare, nginx-based
 * limiters and most CDNs count IPv6 clients by). Anything else (a pipe, an empty or
 * malformed address) is undefined: the request lacks the part.
 */
export function sourceIpPart(address: string): string | undefined {
  if (address === '') return undefined;
  if (isIPv4(address)) return address;
  const zone = address.indexOf('%'); // a link-local zone ("fe80::1%eth0") names an interface, not a client
  const ip = zone >= 0 ? address.slice(0, zone) : address;
  if (!isIPv6(ip)) return undefined;
  const g = ipv6Groups(ip);
  if (!g) return undefined;
  // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated but still seen).
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && (g[5] === 0xffff || g[5] === 0)) {
    if (g[5] === 0xffff || g[6] !== 0 || g[7]! > 1) {
      return `${g[6]! >> 8}.${g[6]! & 255}.${g[7]! >> 8}.${g[7]! & 255}`;
    }
  }
  return `${g[0]!.toString(16)}:${g[1]!.toString(16)}:${g[2]!.toString(16)}:${g[3]!.toString(16)}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (node:net's isIPv6 has checked the syntax). */
function ipv6Groups(ip: string): number[] | undefined {
  let text = ip;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    const v4 = text
      .slice(lastColon + 1)
      .split('.')
      .map(Number);
    tail.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
    text = `${text.slice(0, lastColon + 1)}0`; // placeholder group, dropped below
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined];
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((h) => Number.parseInt(h, 16)));
  const left = parse(head);
  const right = rest === undefined ? [] : parse(rest);
  if (tail.length > 0) (right.length > 0 ? right : left).pop();
  const width = 8 - tail.length;
  const fill = rest === undefined ? 0 : width - left.length - right.length;
  if (fill < 0) return undefined;
  const groups = [...left, ...new Array<number>(fill).fill(0), ...right, ...tail];
  return groups.length === 8 && groups.every((n) => Number.isInteger(n) && n >= 0 && n <= 0xffff)
    ? groups
    : undefined;
}
