import { createHash } from 'node:crypto';
import * as oidc from 'openid-client';
import type { CheckInput } from '../request/input.js';
import type { Deny } from '../request/outcome.js';
import { cookieBase, setCookie } from './cookies.js';
import { githubScopes } from './github.js';
import type { Login } from './login.js';
import type { LoginProvider } from './providers.js';
import type { Keyring } from './seal.js';

/** What the browser carries from the redirect to the callback, sealed: nobody can read or forge it. */
export interface Pending {
  /** Provider key. */
  readonly p: string;
  readonly state: string;
  readonly nonce: string;
  readonly verifier: string;
  /** The local path (and query) the browser first asked for. */
  readonly target: string;
  /** The redirect_uri sent to the provider; the code exchange must repeat it exactly. */
  readonly redirectUri: string;
  readonly expiresAt: number;
}

export const pendingTtlMs = 10 * 60_000;

/**
 * One pre-login cookie per login attempt, named after its state: two tabs logging in at
 * once do not overwrite each other's. Its Path is the callback path, so no other request
 * carries it, and it never replaces the session cookie.
 */
export function pendingCookieName(p: LoginProvider, state: string): string {
  // `__Secure-`, not `__Host-`: a `__Host-` cookie must have Path=/.
  const hash = createHash('sha256').update(state).digest('base64url').slice(0, 12);
  return `__Secure-${cookieBase(p.cookie.name)}_login_${hash}`;
}

const pendingName = /^(.+)_login_[A-Za-z0-9_-]{12}$/;

/**
 * Is this the name of a session cookie whose base name (cookieBase) is in `sessionCookies`, or
 * of a pre-login cookie of one? Any prefix counts, and none: a cookie from before the names
 * were prefixed is Nox's too, and never goes to an upstream.
 */
export function isLoginCookieName(name: string, sessionCookies: ReadonlySet<string>): boolean {
  if (sessionCookies.has(cookieBase(name))) return true;
  const m = pendingName.exec(name);
  return m !== null && sessionCookies.has(cookieBase(m[1]!));
}

/** Redirect to the provider's authorization endpoint: authorization code + PKCE (S256), state and nonce. */
export async function startLogin(
  login: Login,
  p: LoginProvider,
  input: CheckInput,
  target: string,
  now: number,
  /** More authorization request parameters (a step-up's prompt, max_age, acr_values). */
  extra: Readonly<Record<string, string>> = {},
): Promise<Deny> {
  const keyring = login.providers.keyring(p);
  const config = await login.providers.config(p);
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const verifier = oidc.randomPKCECodeVerifier();
  const redirectUri = `${input.scheme || 'https'}://${input.host}${p.callbackPath}`;
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: p.spec.type === 'github' ? githubScopes(p) : p.spec.scopes.join(' '),
    state,
    nonce,
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    ...extra,
  });
  const name = pendingCookieName(p, state);
  const pending: Pending = {
    p: p.key,
    state,
    nonce,
    verifier,
    target,
    redirectUri,
    expiresAt: now + pendingTtlMs,
  };
  const cookie = setCookie(name, keyring.seal('pre-login', JSON.stringify(pending), name), {
    path: p.callbackPath,
    // The callback is a cross-site navigation from the provider: Strict would withhold the cookie.
    sameSite: p.cookie.sameSite === 'None' ? 'None' : 'Lax',
    maxAgeS: pendingTtlMs / 1000,
  });
  return {
    code: 'LOGIN_REDIRECT',
    reason: `login required: sent to ${p.key}`,
    headers: { location: url.href, 'set-cookie': cookie, 'cache-control': 'no-store' },
  };
}

/** The pending login a callback's state points to, or why there is none. */
export function openPending(
  keyring: Keyring,
  p: LoginProvider,
  state: string,
  raw: string,
  now: number,
): Pending | string {
  const plain = keyring.open('pre-login', raw, pendingCookieName(p, state));
  if (plain === undefined) return 'the pre-login cookie is tampered with or sealed under an unknown key';
  const pending = JSON.parse(plain) as Pending;
  if (pending.expiresAt <= now) return 'the pre-login cookie has expired (login took over 10 minutes)';
  // The cookie name carries only a hash prefix of the state; the sealed state must match exactly.
  if (pending.state !== state || pending.p !== p.key) return 'the state does not match the pre-login cookie';
  return pending;
}
