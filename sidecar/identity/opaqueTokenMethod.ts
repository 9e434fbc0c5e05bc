import { decodeJwt } from 'jose';
import type { OAuth2ProviderSpec } from '../../common/resources/types.gen.js';
import type { Ctx } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Snapshot } from '../policy/snapshot.js';
import type { Identity } from '../request/identity.js';
import type { CheckInput } from '../request/input.js';
import type { SecretStore } from '../secrets/secretStore.js';
import { FanoutGuards, type MethodEnv, negativeCacheLimits } from './fanout.js';
import { looksLikeGithubToken } from './githubMethod.js';
import { bearerToken } from './jwtMethod.js';
import { type IdentityMethod, type MethodResult, policyNamespace } from './method.js';
import { type ResolvedProvider, resolveProvider } from './presets.js';
import { type Loaded, tokenHash, VerdictCache } from './verdictCache.js';

export interface OpaqueTokenMethodOptions {
  /** An active token is trusted without asking again for at most this long (and never past its exp). Default 5 min. */
  maxCacheMs?: number;
  /** How long an active token without exp is trusted. Default 60 s. */
  noExpCacheMs?: number;
  /** How long an inactive token is rejected without asking. Default 60 s. */
  negativeCacheMs?: number;
  /** One discovery or introspection call. Default 2 s. */
  timeoutMs?: number;
}

type Verdict = Extract<MethodResult, { kind: 'identified' | 'invalid' }>;

interface ProviderState {
  readonly digest: string;
  readonly spec: OAuth2ProviderSpec;
  readonly p: ResolvedProvider;
  /** The introspection endpoint; '' when the provider has none. */
  endpoint: string | undefined;
  discovery: Promise<string> | undefined;
  retryAt: number;
  backoffMs: number;
}

/** RFC 7662 introspection response members Nox reads. */
interface Introspection {
  active?: unknown;
  token_type?: unknown;
  exp?: unknown;
  nbf?: unknown;
  iss?: unknown;
  aud?: unknown;
  client_id?: unknown;
  [claim: string]: unknown;
}

/** Shorter bearer tokens are not introspected: no issuer mints access tokens of under 96 bits. */
export const MIN_OPAQUE_TOKEN_LENGTH = 16;

/**
 * Opaque bearer tokens of the route's providers, checked by RFC 7662 introspection at the
 * provider's endpoint (spec.endpoints.introspection, else discovery's introspection_endpoint)
 * with the provider's client credentials, and cached by token hash. A JWT is never sent
 * here: it names its issuer, and JwtMethod owns it; handing it to another provider's
 * endpoint would give a credential to a party it was not issued for.
 */
export class OpaqueTokenMethod implements IdentityMethod {
  readonly name = 'opaque';
  readonly #providers = new Map<string, ProviderState>();
  #env: MethodEnv = { guards: new FanoutGuards() };
  readonly #cache = new VerdictCache<Verdict>(50_000, {
    isNegative: (v) => v.kind === 'invalid',
    maxNegative: negativeCacheLimits.maxEntries,
    onNegativeHit: () => this.#env.guards.negativeHit(this.name),
  });
  readonly #opts: Required<OpaqueTokenMethodOptions>;

  constructor(
    private readonly secrets: SecretStore,
    opts: OpaqueTokenMethodOptions = {},
  ) {
    this.#opts = {
      maxCacheMs: opts.maxCacheMs ?? 300_000,
      noExpCacheMs: opts.noExpCacheMs ?? 60_000,
      negativeCacheMs: opts.negativeCacheMs ?? 60_000,
      timeoutMs: opts.timeoutMs ?? 2_000,
    };
  }

  attach(env: MethodEnv): void {
    this.#env = env;
  }

  onSnapshot(s: Snapshot): void {
    for (const [key, spec] of s.providers) {
      if (spec.type === 'github') continue;
      const digest = JSON.stringify(spec);
      if (this.#providers.get(key)?.digest === digest) continue;
      this.#cache.deletePrefix(`${key}|`);
      const endpoint = spec.endpoints?.introspection ?? (spec.issuer ? undefined : '');
      const p = resolveProvider(key, spec);
      this.#providers.set(key, {
        digest,
        spec,
        p,
        endpoint,
        discovery: undefined,
        retryAt: 0,
        backoffMs: 500,
      });
    }
    for (const key of this.#providers.keys()) {
      const spec = s.providers.get(key);
      if (spec && spec.type !== 'github') continue;
      this.#providers.delete(key);
      this.#cache.deletePrefix(`${key}|`);
    }
  }

  /** Forget a token in this process (revocation). */
  revoke(hash: string): void {
    for (const key of this.#providers.keys()) this.#cache.delete(`${key}|${hash}`);
  }

  async identify(input: CheckInput, ctx: Ctx, policy: CompiledAccessPolicy): Promise<MethodResult> {
    const ns = policyNamespace(policy);
    const candidates = policy.providers
      .map((name) => this.#providers.get(`${ns}/${name}`))
      .filter((s): s is ProviderState => s !== undefined && s.endpoint !== '');
    if (candidates.length === 0) return { kind: 'absent' };
    const token = bearerToken(input);
    if (!token) return { kind: 'absent' }; // none, or malformed: JwtMethod reports that
    if (looksLikeJwt(token)) return { kind: 'absent' };
    // RFC 7515 §7.1: three base64url segments is the JWS compact shape. One that does not
    // decode is a broken JWT, not an opaque token: JwtMethod's, never sent to an endpoint.
    if (jwsShape.test(token)) return { kind: 'absent' };
    // Local checks before any remote one: a GitHub token is never handed to another provider's
    // endpoint (GithubMethod owns it), and a token too short to be anyone's is not sent at all.
    if (looksLikeGithubToken(token)) return { kind: 'absent' };
    if (token.length < MIN_OPAQUE_TOKEN_LENGTH) {
      this.#env.guards.localReject(this.name, 'too_short');
      return { kind: 'invalid', reason: 'invalid token: too short' };
    }
    const hash = tokenHash(token);
    // Revoked through Nox (RedisRevocations, every sidecar within a second): refused before any cache.
    if (this.#env.revocations?.isRevoked(`token:${hash}`, ctx.now))
      return { kind: 'invalid', reason: 'the token was revoked' };
    let invalid: Verdict | undefined;
    let unavailable: unknown;
    // Several providers: each is asked in turn, in the policy's order; the first that knows the token names it.
    for (const s of candidates) {
      if (token.length > s.p.maxTokenBytes) {
        invalid ??= { kind: 'invalid', reason: 'the token is too large' };
        continue;
      }
      try {
        const endpoint = await this.#endpoint(s);
        if (!endpoint) continue;
        const v = await this.#cache.getOrLoad(`${s.p.key}|${hash}`, ctx.now, () =>
          this.#env.guards
            .guard(`introspection:${s.p.key}`, 'introspection')
            .run(() => this.#introspect(s, endpoint, token, ns)),
        );
        if (v.kind === 'identified') return v;
        invalid ??= v;
      } catch (e) {
        unavailable ??= e;
      }
    }
    if (unavailable !== undefined) return { kind: 'unavailable', cause: unavailable };
    return invalid ?? { kind: 'absent' };
  }

  async #endpoint(s: ProviderState): Promise<string> {
    if (s.endpoint !== undefined) return s.endpoint;
    if (!s.discovery) {
      if (Date.now() < s.retryAt) throw new Error(`discovery for ${s.p.key} failed recently; retrying later`);
      s.discovery = this.#discover(s.p.issuer!);
    }
    try {
      s.endpoint = await s.discovery;
      return s.endpoint;
    } catch (e) {
      s.discovery = undefined;
      s.retryAt = Date.now() + s.backoffMs;
      s.backoffMs = Math.min(s.backoffMs * 2, 30_000);
      throw new Error(`discovery for ${s.p.key} failed: ${(e as Error).message}`);
    }
  }

  async #discover(issuer: string): Promise<string> {
    const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    const res = await fetch(url, { signal: AbortSignal.timeout(this.#opts.timeoutMs), redirect: 'error' });
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    const doc = (await res.json()) as { issuer?: string; introspection_endpoint?: string };
    // OIDC Discovery §4.3: the document must name the issuer it was fetched for.
    if (doc.issuer !== issuer) throw new Error(`${url} names issuer ${JSON.stringify(doc.issuer)}`);
    return typeof doc.introspection_endpoint === 'string' ? doc.introspection_endpoint : '';
  }

  async #introspect(s: ProviderState, endpoint: string, token: string, ns: string): Promise<Loaded<Verdict>> {
    const ref = s.spec.clientSecretRef;
    const secret = ref ? this.secrets.get(ns, ref.name, ref.key)?.toString('utf8').trim() : undefined;
    // RFC 7662 §2.1: the resource server authenticates to the endpoint.
    if (!secret)
      throw new Error(`provider ${s.p.key}: client secret ${ref ? `${ns}/${ref.name}` : ''} not available`);
    const basic = Buffer.from(`${encodeURIComponent(s.p.clientId)}:${encodeURIComponent(secret)}`).toString(
      'base64',
    );
    const res = await fetch(endpoint, {
      method: 'POST',
      headers: {
        authorization: `Basic ${basic}`,
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
      },
      body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
      signal: AbortSignal.timeout(this.#opts.timeoutMs),
      redirect: 'error',
    });
    if (!res.ok) throw new Error(`introspection at ${endpoint}: HTTP ${res.status}`);
    const r = (await res.json()) as Introspection;
    const now = Date.now();
    const reject = (reason: string): Loaded<Verdict> => ({
      value: { kind: 'invalid', reason: `invalid token: ${reason}` },
      expiresAt: now + this.#opts.negativeCacheMs,
    });
    const skewMs = s.p.clockToleranceS * 1000;
    if (r.active !== true) return reject('inactive');
    // A refresh token is not an access token, whatever the endpoint says about it.
    if (typeof r.token_type === 'string' && /refresh/i.test(r.token_type))
      return reject('not an access token');
    if (r.exp !== undefined && !(typeof r.exp === 'number' && r.exp * 1000 + skewMs > now))
      return reject('expired');
    if (r.nbf !== undefined && !(typeof r.nbf === 'number' && r.nbf * 1000 - skewMs <= now))
      return reject('not yet valid');
    if (r.iss !== undefined && s.p.issuer && r.iss !== s.p.issuer) return reject('unexpected issuer');
    // Opaque tokens often carry no "aud"; it is required only where the provider lists audiences.
    const wanted = s.spec.audiences ?? [];
    if (wanted.length > 0) {
      const aud = Array.isArray(r.aud) ? r.aud : [r.aud];
      if (!aud.some((a) => typeof a === 'string' && wanted.includes(a))) return reject('unexpected audience');
    }
    const sub = r[s.p.claims.subject] ?? r.sub ?? r.client_id;
    if (typeof sub !== 'string' || sub === '') return reject('no subject');
    const cap = typeof r.exp === 'number' ? r.exp * 1000 : now + this.#opts.noExpCacheMs;
    return {
      value: { kind: 'identified', identity: toIdentity(s.p, sub, r) },
      expiresAt: Math.min(cap, now + this.#opts.maxCacheMs),
    };
  }
}

const jwsShape = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

function looksLikeJwt(token: string): boolean {
  if (token.split('.').length !== 3) return false;
  try {
    decodeJwt(token);
    return true;
  } catch {
    return false;
  }
}

function strings(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === 'string') return v.split(' ').filter((x) => x !== '');
  return [];
}

function toIdentity(p: ResolvedProvider, sub: string, r: Introspection): Identity {
  const email = r[p.claims.email];
  return {
    subject: `${p.name}:${sub}`,
    provider: p.name,
    method: 'opaque',
    ...(typeof email === 'string' ? { email } : {}),
    emailVerified: r[p.claims.emailVerified] === true,
    ...(typeof r.client_id === 'string' ? { clientId: r.client_id } : {}),
    groups: strings(r[p.claims.groups]),
    roles: strings(r[p.claims.roles]),
    scopes: strings(r[p.claims.scopes]),
    claims: r,
  };
}
