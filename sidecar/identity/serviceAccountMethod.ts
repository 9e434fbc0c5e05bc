import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { AuthenticationV1Api, type KubeConfig, type V1TokenReview } from '@kubernetes/client-node';
import { createLocalJWKSet, decodeJwt, errors, type JSONWebKeySet, jwtVerify } from 'jose';
import type { Ctx } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { CheckInput } from '../request/input.js';
import { FanoutGuards, type MethodEnv, negativeCacheLimits } from './fanout.js';
import { bearerToken } from './jwtMethod.js';
import type { IdentityMethod, MethodResult } from './method.js';
import { type Loaded, tokenHash, VerdictCache } from './verdictCache.js';

export interface ServiceAccountMethodOptions {
  kubeConfig: KubeConfig;
  /** A verified token is trusted again without a TokenReview for at most this long. Default 5 min. */
  maxCacheMs?: number;
  /** A rejected token is rejected again without asking for this long. Default 30 s. */
  negativeCacheMs?: number;
  /** One TokenReview call. Default 2 s. */
  timeoutMs?: number;
  maxEntries?: number;
}

const SA_PREFIX = 'system:serviceaccount:';
/** Far above any ServiceAccount token; longer ones are not sent to the API server. */
const MAX_TOKEN_BYTES = 16_384;
/** The issuer of legacy Secret-based tokens, signed with the same keys. */
const LEGACY_ISSUER = 'kubernetes/serviceaccount';
/** The cluster's keys are re-read this often, and after an unknown key id at most once per cooldown. */
const KEYS_MAX_AGE_MS = 600_000;
const KEYS_COOLDOWN_MS = 30_000;
/** Tolerance on exp and nbf in the local check; the API server applies its own. */
const CLOCK_SKEW_S = 60;

type Verdict = Extract<MethodResult, { kind: 'identified' | 'invalid' }>;

/**
 * Kubernetes ServiceAccount tokens (bearer), checked with the TokenReview API
 * (authentication.k8s.io/v1) and cached by token hash until min(exp, maxCacheMs): the API
 * server sees one review per token and cache period, never one per request. Only tokens
 * whose unverified "sub" names a ServiceAccount are considered, so no other provider's token
 * ever reaches the API server; and before a review, each is checked locally against the
 * cluster's own ServiceAccount issuer and signing keys (the API server's issuer discovery,
 * /.well-known/openid-configuration and /openid/v1/jwks, readable by every ServiceAccount
 * through system:service-account-issuer-discovery): a forged, unsigned, expired or other
 * issuer's token costs the API server nothing. Where the API server does not serve those,
 * tokens go to TokenReview unverified, still under the fan-out guard. RBAC: create on
 * tokenreviews (system:auth-delegator).
 */
export class ServiceAccountMethod implements IdentityMethod {
  readonly name = 'serviceAccount';
  readonly #api: AuthenticationV1Api;
  readonly #cache: VerdictCache<Verdict>;
  readonly #keys: ClusterKeys;
  readonly #opts: Required<Omit<ServiceAccountMethodOptions, 'kubeConfig'>>;
  #env: MethodEnv = { guards: new FanoutGuards() };

  constructor(opts: ServiceAccountMethodOptions) {
    this.#api = opts.kubeConfig.makeApiClient(AuthenticationV1Api);
    this.#opts = {
      maxCacheMs: opts.maxCacheMs ?? 300_000,
      negativeCacheMs: opts.negativeCacheMs ?? 30_000,
      timeoutMs: opts.timeoutMs ?? 2_000,
      maxEntries: opts.maxEntries ?? 50_000,
    };
    this.#cache = new VerdictCache(this.#opts.maxEntries, {
      isNegative: (v) => v.kind === 'invalid',
      maxNegative: negativeCacheLimits.maxEntries,
      onNegativeHit: () => this.#env.guards.negativeHit(this.name),
    });
    this.#keys = new ClusterKeys(opts.kubeConfig, this.#opts.timeoutMs);
  }

  attach(env: MethodEnv): void {
    this.#env = env;
  }

  /** Forget a token in this process (revocation). */
  revoke(hash: string): void {
    this.#cache.deletePrefix(`${hash}|`);
  }

  async identify(input: CheckInput, ctx: Ctx, policy: CompiledAccessPolicy): Promise<MethodResult> {
    const spec = policy.serviceAccounts;
    if (!spec) return { kind: 'absent' };
    const token = bearerToken(input);
    if (token === undefined) return { kind: 'absent' };
    if (token === '') return { kind: 'invalid', reason: 'the Authorization header is not a Bearer token' };
    if (token.length > MAX_TOKEN_BYTES) return { kind: 'absent' };
    let claims: { sub?: unknown; exp?: unknown };
    try {
      claims = decodeJwt(token);
    } catch {
      return { kind: 'absent' };
    }
    if (typeof claims.sub !== 'string' || !claims.sub.startsWith(SA_PREFIX)) return { kind: 'absent' };
    const audiences = spec.audiences ?? [];
    const hash = tokenHash(token);
    // Revoked through Nox (RedisRevocations, every sidecar within a second): refused before any cache.
    if (this.#env.revocations?.isRevoked(`token:${hash}`, ctx.now))
      return { kind: 'invalid', reason: 'the token was revoked' };
    const key = `${hash}|${audiences.join(' ')}`;
    const cached = this.#cache.get(key, ctx.now);
    if (cached) return cached;
    const exp = typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : undefined;
    // Local checks before the remote one; a rejection is remembered like the API server's.
    const local = await this.#verifyLocally(token, ctx.now);
    if (local) {
      this.#env.guards.localReject(this.name, local.check);
      const value: Verdict = { kind: 'invalid', reason: local.reason };
      this.#cache.set(key, value, ctx.now + this.#opts.negativeCacheMs);
      return value;
    }
    try {
      return await this.#cache.getOrLoad(key, ctx.now, () =>
        this.#env.guards.guard('tokenreview', 'tokenReview').run(() => this.#review(token, audiences, exp)),
      );
    } catch (e) {
      return { kind: 'unavailable', cause: e };
    }
  }

  /** Why the token cannot be a ServiceAccount token of this cluster, or undefined if it may be. */
  async #verifyLocally(token: string, now: number): Promise<{ check: string; reason: string } | undefined> {
    let keys = await this.#keys.current(now);
    // The API server does not publish its keys (old, or discovery closed): TokenReview decides alone.
    if (!keys) return undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        await jwtVerify(token, keys.jwks, {
          // RFC 8725 §3.1: asymmetric algorithms only; the API server signs with RS256 or ES256.
          algorithms: ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512'],
          issuer: [keys.issuer, LEGACY_ISSUER],
          clockTolerance: CLOCK_SKEW_S,
          currentDate: new Date(now),
        });
        return undefined;
      } catch (e) {
        if (e instanceof errors.JWKSNoMatchingKey && attempt === 0) {
          // A key rotated in since the last read: read again, at most once per cooldown.
          const fresher = await this.#keys.refresh(now);
          if (fresher && fresher !== keys) {
            keys = fresher;
            continue;
          }
          return {
            check: 'signature',
            reason: 'the token is not signed by this cluster’s ServiceAccount keys',
          };
        }
        if (e instanceof errors.JWTExpired)
          return { check: 'expiry', reason: 'the ServiceAccount token expired' };
        if (e instanceof errors.JWTClaimValidationFailed)
          return e.claim === 'iss'
            ? { check: 'issuer', reason: 'the token is not from this cluster’s ServiceAccount issuer' }
            : { check: 'claims', reason: `the ServiceAccount token is not valid: ${e.claim} claim` };
        if (e instanceof errors.JWKSNoMatchingKey || e instanceof errors.JWSSignatureVerificationFailed)
          return {
            check: 'signature',
            reason: 'the token is not signed by this cluster’s ServiceAccount keys',
          };
        return { check: 'shape', reason: 'the ServiceAccount token is malformed' };
      }
    }
  }

  async #review(
    token: string,
    audiences: readonly string[],
    exp: number | undefined,
  ): Promise<Loaded<Verdict>> {
    const body: V1TokenReview = {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, ...(audiences.length > 0 ? { audiences: [...audiences] } : {}) },
    };
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('TokenReview timed out')), this.#opts.timeoutMs);
    });
    let review: V1TokenReview;
    try {
      review = await Promise.race([this.#api.createTokenReview({ body }), timeout]);
    } catch (e) {
      // ApiException's message carries the request body, the token included: keep only the status.
      const code = (e as { code?: unknown }).code;
      throw new Error(
        typeof code === 'number'
          ? `TokenReview failed: HTTP ${code}`
          : `TokenReview failed: ${(e as Error).message}`,
      );
    } finally {
      clearTimeout(timer);
    }
    const now = Date.now();
    const status = review.status ?? {};
    const user = status.user;
    const rejected = (reason: string): Loaded<Verdict> => ({
      value: { kind: 'invalid', reason },
      expiresAt: now + this.#opts.negativeCacheMs,
    });
    if (status.authenticated !== true || !user?.username)
      return rejected(
        `ServiceAccount token rejected by the API server${status.error ? `: ${status.error}` : ''}`,
      );
    if (!user.username.startsWith(SA_PREFIX))
      return rejected('the token does not belong to a ServiceAccount');
    // The API server reports the requested audiences the token is bound to; none means not for us.
    if (audiences.length > 0 && !(status.audiences ?? []).some((a) => audiences.includes(a)))
      return rejected('the ServiceAccount token is not bound to an accepted audience');
    const expiresAt = Math.min(exp ?? Number.POSITIVE_INFINITY, now + this.#opts.maxCacheMs);
    const value: Verdict = {
      kind: 'identified',
      identity: {
        subject: `k8s:${user.username}`,
        provider: 'k8s',
        method: 'serviceAccount',
        groups: user.groups ?? [],
        roles: [],
        scopes: [],
        claims: {
          username: user.username,
          ...(user.uid ? { uid: user.uid } : {}),
          ...(user.extra ? { extra: user.extra } : {}),
          ...(status.audiences ? { aud: status.audiences } : {}),
        },
      },
    };
    return { value, expiresAt };
  }
}

interface KeySet {
  readonly issuer: string;
  readonly jwks: ReturnType<typeof createLocalJWKSet>;
  readonly fetchedAt: number;
}

/**
 * The cluster's ServiceAccount issuer and public signing keys, read from the API server
 * (Service Account Issuer Discovery) with the sidecar's own credentials: once at first use,
 * again every KEYS_MAX_AGE_MS, and after an unknown key id at most once per KEYS_COOLDOWN_MS.
 * When they cannot be read, the last good set stays; with none, current() is undefined.
 */
class ClusterKeys {
  #set: KeySet | undefined;
  #loading: Promise<KeySet | undefined> | undefined;
  #nextAttemptAt = 0;

  constructor(
    private readonly kc: KubeConfig,
    private readonly timeoutMs: number,
  ) {}

  async current(now: number): Promise<KeySet | undefined> {
    const set = this.#set;
    if (set && now - set.fetchedAt < KEYS_MAX_AGE_MS) return set;
    const loading = this.#load(now);
    // The first read is awaited; a periodic re-read runs beside requests, which use the set they have.
    return set ?? (await loading);
  }

  async refresh(now: number): Promise<KeySet | undefined> {
    if (this.#set && now - this.#set.fetchedAt < KEYS_COOLDOWN_MS) return this.#set;
    return (await this.#load(now)) ?? this.#set;
  }

  #load(now: number): Promise<KeySet | undefined> {
    if (this.#loading) return this.#loading;
    if (now < this.#nextAttemptAt) return Promise.resolve(this.#set);
    this.#loading = (async () => {
      try {
        const doc = (await this.#get('/.well-known/openid-configuration')) as { issuer?: unknown };
        const jwks = (await this.#get('/openid/v1/jwks')) as JSONWebKeySet;
        if (typeof doc.issuer !== 'string' || !Array.isArray(jwks.keys))
          throw new Error('unexpected documents');
        this.#set = { issuer: doc.issuer, jwks: createLocalJWKSet(jwks), fetchedAt: Date.now() };
        this.#nextAttemptAt = Date.now() + KEYS_COOLDOWN_MS;
        return this.#set;
      } catch {
        // Not served (an old API server, discovery disabled): try again after the cooldown.
        this.#nextAttemptAt = Date.now() + KEYS_COOLDOWN_MS;
        return this.#set;
      } finally {
        this.#loading = undefined;
      }
    })();
    return this.#loading;
  }

  async #get(path: string): Promise<unknown> {
    const server = this.kc.getCurrentCluster()?.server;
    if (!server) throw new Error('no cluster in the kubeconfig');
    const url = new URL(path, server);
    // The API server serves the key set as application/jwk-set+json and answers 406 to other Accepts.
    const opts: RequestOptions = {
      method: 'GET',
      headers: { accept: 'application/json, application/jwk-set+json' },
    };
    await this.kc.applyToHTTPSOptions(opts);
    const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
    return new Promise((resolve, reject) => {
      const req = send(url, opts, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > 1_000_000) req.destroy(new Error(`${path}: response too large`));
          else chunks.push(c);
        });
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`${path}: HTTP ${res.statusCode}`));
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
          } catch (e) {
            reject(e);
          }
        });
        res.on('error', reject);
      });
      req.setTimeout(this.timeoutMs, () => req.destroy(new Error(`${path}: timed out`)));
      req.on('error', reject);
      req.end();
    });
  }
}
