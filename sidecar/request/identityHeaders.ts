import type { AccessPolicySpec } from '../../common/resources/types.gen.js';
import type { Identity } from './identity.js';

/** Header names an AccessPolicy passes the caller's identity in (spec.identityHeaders). */
export type IdentityHeaderNames = AccessPolicySpec['identityHeaders'];

/** The longest value (UTF-8 bytes) Nox puts in an identity header; a longer one is not sent. */
export const maxIdentityHeaderBytes = 8192;

/** What the groups header, and any list-valued claim header, joins its items with. */
export const listSeparator = ',';

// C0 controls (NUL, CR, LF, TAB, ...), DEL and C1 controls: none of them belongs in a header
// value. CR/LF would split the header (RFC 9110 §5.5), NUL ends it in C parsers.
// biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
const controlChars = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * Whether `value` can be passed to the upstream exactly as it is. A value that cannot is never
 * repaired (dropping or replacing characters could turn one identity into another: "ad\0min"
 * into "admin"), it is not sent at all: control characters, leading or trailing whitespace
 * (which HTTP parsers strip, RFC 9110 §5.5, so " admin" would arrive as "admin"), empty, or
 * longer than maxIdentityHeaderBytes.
 */
export function safeHeaderValue(value: string): boolean {
  if (value === '' || controlChars.test(value)) return false;
  if (value.trim() !== value) return false;
  return Buffer.byteLength(value, 'utf8') <= maxIdentityHeaderBytes;
}

/**
 * Items of a list header (groups, a list-valued claim): an item is sent only if it is safe on
 * its own and holds no separator, so a group named "dev,admin" can never read upstream as two
 * groups "dev" and "admin"; such an item is left out, the others are sent. The joined value is
 * undefined when no item is left or it is over the length bound (never cut short).
 */
export function joinList(items: readonly unknown[]): string | undefined {
  const kept: string[] = [];
  for (const item of items) {
    if (typeof item !== 'string' && typeof item !== 'number' && typeof item !== 'boolean') continue;
    const text = String(item);
    if (text.includes(listSeparator) || !safeHeaderValue(text)) continue;
    kept.push(text);
  }
  if (kept.length === 0) return undefined;
  const joined = kept.join(listSeparator);
  return safeHeaderValue(joined) ? joined : undefined;
}

function claimText(v: unknown): string | undefined {
  if (Array.isArray(v)) {
    const primitives = v.every((i) => ['string', 'number', 'boolean'].includes(typeof i));
    return primitives ? joinList(v) : claimText(JSON.stringify(v));
  }
  // JSON escapes control characters, so an object claim is sent as its JSON text.
  const text = typeof v === 'object' ? JSON.stringify(v) : String(v);
  return safeHeaderValue(text) ? text : undefined;
}

/**
 * The headers that tell the upstream who is calling, under the policy's names (lower-case).
 * A header whose value is unsafe (see safeHeaderValue) is left out, and the client's own copy
 * is still removed (respond.ts), so the upstream sees either Nox's exact value or nothing.
 * The email goes upstream only when the provider says it is verified.
 */
export function identityHeaders(id: Identity, h: IdentityHeaderNames): Record<string, string> {
  const out: Record<string, string> = {};
  const set = (name: string, value: string | undefined) => {
    if (value !== undefined && safeHeaderValue(value)) out[name.toLowerCase()] = value;
  };
  set(h.user, id.subject);
  set(h.provider, id.provider);
  // An unverified email is whatever the user typed at the provider: never an identity.
  if (id.emailVerified === true) set(h.email, id.email);
  set(h.groups, joinList(id.groups));
  for (const [header, claim] of Object.entries(h.claims ?? {})) {
    let v: unknown = id.claims;
    for (const part of claim.split('.'))
      v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[part] : undefined;
    if (v === undefined || v === null) continue;
    set(header, claimText(v));
  }
  return out;
}
