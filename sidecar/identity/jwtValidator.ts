import {
  createRemoteJWKSet,
  customFetch,
  errors,
  type JWTHeaderParameters,
  type JWTPayload,
  jwtVerify,
} from 'jose';
import type { Identity } from '../request/identity.js';
import type { ResolvedProvider } from './presets.js';

export class InvalidToken extends Error {
  override readonly name = 'InvalidToken';
}
export class ProviderUnavailable extends Error {
  override readonly name = 'ProviderUnavailable';
}

type KeySet = ReturnType<typeof createRemoteJWKSet>;

/**
 * Validates one provider's bearer JWTs. Keys come from the JWKS (from discovery unless
 * set), cached by jose for `cacheMaxAgeMs` and re-fetched on an unknown kid at most once
 * per `cooldownMs`. A failed discovery is retried with backoff, never on every request.
 */
export class JwtValidator {
  #keys: KeySet | undefined;
  #discovery: Promise<KeySet> | undefined;
  #nextDiscoveryAt = 0;
  #backoffMs = 500;

  constructor(
    readonly provider: ResolvedProvider,
    private readonly opts: {
      cooldownMs: number;
      cacheMaxAgeMs: number;
      timeoutMs: number;
      /** Called on every JWKS fetch (metrics). */
      onFetch?: (provider: string) => void;
    },
  ) {}

  async #keySet(): Promise<KeySet> {
    if (this.#keys) return this.#keys;
    const p = this.provider;
    if (p.jwksUri) {
      this.#keys = this.#remote(p.jwksUri);
      return this.#keys;
    }
    if (!p.issuer) throw new ProviderUnavailable(`provider ${p.key} has neither issuer nor endpoints.jwks`);
    if (!this.#discovery) {
      if (Date.now() < this.#nextDiscoveryAt)
        throw new ProviderUnavailable(`discovery for ${p.issuer} failed recently; retrying later`);
      this.#discovery = this.#discover(p.issuer);
    }
    try {
      this.#keys = await this.#discovery;
      return this.#keys;
    } catch (e) {
      this.#discovery = undefined;
      this.#nextDiscoveryAt = Date.now() + this.#backoffMs;
      this.#backoffMs = Math.min(this.#backoffMs * 2, 30_000);
      throw new ProviderUnavailable(`discovery for ${p.issuer} failed: ${(e as Error).message}`);
    }
  }

  async #discover(issuer: string): Promise<KeySet> {
    const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    const res = await fetch(url, { signal: AbortSignal.timeout(this.opts.timeoutMs), redirect: 'error' });
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    const doc = (await res.json()) as { issuer?: string; jwks_uri?: string };
    // OIDC Discovery §4.3: the document must name the issuer it was fetched for.
    if (doc.issuer !== issuer)
      throw new Error(`${url} names issuer ${JSON.stringify(doc.issuer)}, expected ${issuer}`);
    if (!doc.jwks_uri) throw new Error(`${url} has no jwks_uri`);
    this.#backoffMs = 500;
    return this.#remote(doc.jwks_uri);
  }

  #remote(uri: string): KeySet {
    return createRemoteJWKSet(new URL(uri), {
      cooldownDuration: this.opts.cooldownMs,
      cacheMaxAge: this.opts.cacheMaxAgeMs,
      timeoutDuration: this.opts.timeoutMs,
      [customFetch]: (url: string, init: RequestInit) => {
        this.opts.onFetch?.(this.provider.name);
        return fetch(url, init);
      },
    });
  }

  async validate(token: string): Promise<{ identity: Identity; expiresAt: number }> {
    const p = this.provider;
    const keys = await this.#keySet();
    let payload: JWTPayload;
    let header: JWTHeaderParameters;
    try {
      const issuer = p.issuer?.includes('{tenantid}')
        ? undefined
        : p.issuerSpellings
          ? [...p.issuerSpellings]
          : p.issuer;
      ({ payload, protectedHeader: header } = await jwtVerify(token, keys, {
        // RFC 8725 §3.1: only the provider's allow-listed algorithms; "none" and HS* are not
        // even expressible in the OAuth2Provider schema.
        algorithms: [...p.algorithms],
        ...(issuer ? { issuer } : {}),
        audience: [...p.audiences],
        clockTolerance: p.clockToleranceS,
        requiredClaims: ['exp', p.claims.subject],
      }));
    } catch (e) {
      if (
        e instanceof errors.JWKSTimeout ||
        (e instanceof errors.JOSEError && e.code === 'ERR_JWKS_INVALID')
      ) {
        throw new ProviderUnavailable(`JWKS of ${p.key}: ${e.message}`);
      }
      if (e instanceof TypeError || (e instanceof Error && /fetch failed|ECONNREFUSED/.test(e.message))) {
        throw new ProviderUnavailable(`JWKS of ${p.key} unreachable: ${e.message}`);
      }
      throw new InvalidToken(e instanceof Error ? e.message : String(e));
    }
    if (p.issuer?.includes('{tenantid}')) {
      // Multi-tenant Entra ID: the tenant must be one the provider lists (microsoft.allowedTenants),
      // and the token's iss the issuer template filled with that very tenant.
      const tid = payload.tid;
      if (typeof tid !== 'string' || !p.allowedTenants?.has(tid))
        throw new InvalidToken(`tenant ${JSON.stringify(tid ?? null)} is not in microsoft.allowedTenants`);
      if (payload.iss !== p.issuer.replace('{tenantid}', tid))
        throw new InvalidToken(`unexpected "iss" claim value`);
    }
    const idToken = idTokenMark(p, header, payload);
    if (idToken) throw new InvalidToken(`an ID token is not an access token (${idToken})`);
    return { identity: toIdentity(p, payload), expiresAt: (payload.exp ?? 0) * 1000 };
  }
}

/** RFC 9068 §4: "at+jwt", or the full media type "application/at+jwt" (RFC 7515 §4.1.9, any case). */
const atJwt = /^(application\/)?at\+jwt$/i;
const plainJwt = /^(application\/)?jwt$/i;
/** Claims OpenID Connect defines for ID tokens only (Core §2, §3.3.2.11; FAPI 1.0 §5.2.2.1 s_hash). */
const idTokenClaims = ['nonce', 'at_hash', 'c_hash', 's_hash'] as const;

/**
 * Why a verified token is an ID token rather than an access token, under the provider's
 * accessTokenType, or undefined when it may be used as a bearer (RFC 9068 §4, RFC 8725 §3.11).
 */
export function idTokenMark(
  p: ResolvedProvider,
  header: JWTHeaderParameters,
  c: JWTPayload,
): string | undefined {
  if (p.accessTokenType === 'Any') return undefined;
  const typ = header.typ;
  if (typeof typ === 'string' && atJwt.test(typ)) return undefined;
  const shown = typ === undefined ? 'no typ' : `typ ${JSON.stringify(typ)}`;
  if (p.accessTokenType === 'AtJwt')
    return `${shown}; this provider's access tokens are typ at+jwt, RFC 9068`;
  // NotIdToken: typed as something else entirely (id_token+jwt, logout+jwt, secevent+jwt, ...).
  if (typ !== undefined && !(typeof typ === 'string' && plainJwt.test(typ))) return shown;
  for (const claim of idTokenClaims) if (c[claim] !== undefined) return `it carries ${claim}`;
  if (c.typ === 'ID') return 'typ claim "ID"'; // Keycloak marks its ID tokens so
  if (p.type === 'microsoft') {
    // Entra ID types both kinds "JWT"; its access tokens name the client (azp in v2.0, appid
    // in v1.0) and its ID tokens never do.
    if (c.azp === undefined && c.appid === undefined) return 'no azp or appid';
    return undefined;
  }
  // An ID token's audience is the client it was issued to (OIDC Core §2); an access token for
  // this API grants a scope or names its client (RFC 9068 §2.2: client_id, scope).
  const aud = Array.isArray(c.aud) && c.aud.length === 1 ? c.aud[0] : c.aud;
  if (aud === p.clientId && c.scope === undefined && c.scp === undefined && c.client_id === undefined)
    return 'aud is the client id alone and it grants no scope';
  return undefined;
}

function strings(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === 'string') return v.split(' ').filter((s) => s !== '');
  return [];
}

function toIdentity(p: ResolvedProvider, c: JWTPayload): Identity {
  const email = c[p.claims.email];
  const clientId = c.azp ?? c.client_id;
  return {
    subject: `${p.name}:${String(c[p.claims.subject])}`,
    provider: p.name,
    method: 'jwt',
    ...(typeof email === 'string' ? { email } : {}),
    emailVerified: c[p.claims.emailVerified] === true,
    ...(typeof clientId === 'string' ? { clientId } : {}),
    groups: strings(c[p.claims.groups]),
    roles: strings(c[p.claims.roles]),
    scopes: strings(c[p.claims.scopes]),
    claims: c,
  };
}
