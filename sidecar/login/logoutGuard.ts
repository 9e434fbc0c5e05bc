import { createHmac, timingSafeEqual } from 'node:crypto';
import type { CheckInput } from '../request/input.js';

/**
 * Logout is a state change, so it is a POST, and a POST another site can make a browser send
 * (a form, with the session cookie when it is SameSite=None) must not end a session: the way
 * Django and Rails guard one, by origin and by token.
 *
 * - The browser's own word first: Sec-Fetch-Site other than same-origin/none, or an Origin of
 *   another host, is a cross-site request and is refused whatever else it carries.
 * - Then proof it comes from this site: Sec-Fetch-Site: same-origin, an Origin of this host,
 *   or the logout token of a session the request carries (the confirm page's form posts to
 *   `?nox_logout=<token>`, for browsers that send neither header or "Origin: null").
 * - A request carrying no session has nothing to forge: it only clears cookies.
 *
 * The token is an HMAC keyed by the session id, which only the browser holds (an HttpOnly
 * cookie): no store lookup, nothing to keep, and it dies with the session.
 */

export const logoutTokenParam = 'nox_logout';

export function logoutToken(sessionId: string): string {
  return createHmac('sha256', sessionId).update('nox logout').digest('base64url');
}

export type LogoutVerdict = { readonly ok: true } | { readonly ok: false; readonly reason: string };

export function checkLogoutRequest(input: CheckInput, sessionIds: readonly string[]): LogoutVerdict {
  const site = input.headers['sec-fetch-site']?.toLowerCase();
  const origin = input.headers.origin;
  const originHost = hostOfOrigin(origin);
  const host = input.host.toLowerCase();
  if (site !== undefined && site !== 'same-origin' && site !== 'none')
    return { ok: false, reason: `cross-site logout refused (Sec-Fetch-Site: ${site})` };
  if (originHost !== undefined && originHost !== host)
    return { ok: false, reason: 'cross-origin logout refused (Origin is another host)' };
  if (sessionIds.length === 0) return { ok: true };
  if (site === 'same-origin' || originHost === host) return { ok: true };
  const given = new URLSearchParams(input.query).get(logoutTokenParam);
  if (given && sessionIds.some((id) => sameToken(given, logoutToken(id)))) return { ok: true };
  return {
    ok: false,
    reason: given
      ? 'logout token does not match the session'
      : 'logout without a logout token or a same-origin header',
  };
}

/** The host[:port] of an Origin header; undefined when absent, "null" or not a URL. */
function hostOfOrigin(origin: string | undefined): string | undefined {
  if (!origin || origin === 'null') return undefined;
  try {
    return new URL(origin).host.toLowerCase();
  } catch {
    return '\u0000unparsable'; // present but not an origin: never this host
  }
}

function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
