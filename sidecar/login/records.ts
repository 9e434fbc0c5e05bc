import type { IDToken, TokenEndpointResponse, TokenEndpointResponseHelpers } from 'openid-client';
import type { Identity } from '../request/identity.js';
import type { LoginProvider } from './providers.js';
import type { Keyring } from './seal.js';
import type { SealedTokens, SessionRecord } from './sessionStore.js';

export type TokenResponse = TokenEndpointResponse & TokenEndpointResponseHelpers;

/** The provider's answer was well-formed but is not a usable login (no ID token, no subject, a changed subject). */
export class UnusableTokens extends Error {
  override readonly name = 'UnusableTokens';
}

function strings(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === 'string') return v.split(' ').filter((s) => s !== '');
  return [];
}

export function subjectOf(p: LoginProvider, claims: Readonly<Record<string, unknown>>): string {
  const sub = claims[p.resolved.claims.subject];
  if (typeof sub !== 'string' || sub === '')
    throw new UnusableTokens(`the ID token has no "${p.resolved.claims.subject}" claim`);
  // Provider-qualified: a user of one provider is never taken for a user of another.
  return `${p.resolved.name}:${sub}`;
}

/**
 * The session after a code exchange (`prev` undefined) or a refresh. A refresh may omit the
 * refresh token (not rotated) or the ID token; what it omits is kept. A refreshed ID token
 * naming another subject ends the session (OIDC Core §12.2: it must be the same user).
 */
export function nextRecord(
  p: LoginProvider,
  keyring: Keyring,
  hash: string,
  res: TokenResponse,
  now: number,
  prev?: { record: SessionRecord; tokens: SealedTokens },
  /** The identity when the provider has no ID token (GitHub: its user API). */
  userClaims?: Readonly<Record<string, unknown>>,
): SessionRecord {
  const idClaims: IDToken | undefined = res.claims();
  const claims = (idClaims ?? userClaims ?? prev?.record.claims) as
    | Readonly<Record<string, unknown>>
    | undefined;
  if (!claims) throw new UnusableTokens('the provider sent no ID token (is "openid" among the scopes?)');
  const subject = subjectOf(p, claims);
  if (prev && subject !== prev.record.subject)
    throw new UnusableTokens('a refreshed ID token names another subject');
  const tokens: SealedTokens = {
    access: res.access_token,
    refresh: res.refresh_token ?? prev?.tokens.refresh,
    id: res.id_token ?? prev?.tokens.id,
  };
  const expiresIn = res.expiresIn();
  return {
    v: 1,
    provider: p.key,
    subject,
    claims,
    scopes: res.scope !== undefined ? strings(res.scope) : (prev?.record.scopes ?? []),
    tokens: sealTokens(keyring, hash, tokens),
    hasRefreshToken: tokens.refresh !== undefined,
    accessExpiresAt: expiresIn !== undefined ? now + expiresIn * 1000 : 0,
    createdAt: prev?.record.createdAt ?? now,
    expiresAt: prev?.record.expiresAt ?? now + p.sessionTtlMs,
    ...(prev ? { refreshedAt: now } : {}),
  };
}

// Bound to the session hash: tokens copied into another session's record do not open there.
export function sealTokens(keyring: Keyring, hash: string, tokens: SealedTokens): string {
  return keyring.seal('session-tokens', JSON.stringify(tokens), hash);
}

export function openTokens(keyring: Keyring, hash: string, record: SessionRecord): SealedTokens | undefined {
  const plain = keyring.open('session-tokens', record.tokens, hash);
  return plain === undefined ? undefined : (JSON.parse(plain) as SealedTokens);
}

export function identityOf(p: LoginProvider, r: SessionRecord): Identity {
  const c = r.claims;
  const names = p.resolved.claims;
  const email = c[names.email];
  return {
    subject: r.subject,
    provider: p.resolved.name,
    method: 'session',
    ...(typeof email === 'string' ? { email } : {}),
    emailVerified: c[names.emailVerified] === true,
    clientId: p.spec.clientId,
    groups: strings(c[names.groups]),
    roles: strings(c[names.roles]),
    scopes: r.scopes,
    claims: c,
  };
}
