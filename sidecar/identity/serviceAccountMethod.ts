import { AuthenticationV1Api, type KubeConfig, type V1TokenReview } from '@kubernetes/client-node';
import { decodeJwt } from 'jose';
import type { Ctx } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { CheckInput } from '../request/input.js';
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

type Verdict = Extract<MethodResult, { kind: 'identified' | 'invalid' }>;

/**
 * Kubernetes ServiceAccount tokens (bearer), checked with the TokenReview API
 * (authentication.k8s.io/v1) and cached by token hash until min(exp, maxCacheMs): the API
 * server sees one review per token and cache period, never one per request. Only tokens
 * whose unverified "sub" names a ServiceAccount are sent, so no other provider's token
 * ever reaches the API server. RBAC: create on tokenreviews (system:auth-delegator).
 */
export class ServiceAccountMethod implements IdentityMethod {
  readonly name = 'serviceAccount';
  readonly #api: AuthenticationV1Api;
  readonly #cache: VerdictCache<Verdict>;
  readonly #opts: Required<Omit<ServiceAccountMethodOptions, 'kubeConfig'>>;

  constructor(opts: ServiceAccountMethodOptions) {
    this.#api = opts.kubeConfig.makeApiClient(AuthenticationV1Api);
    this.#opts = {
      maxCacheMs: opts.maxCacheMs ?? 300_000,
      negativeCacheMs: opts.negativeCacheMs ?? 30_000,
      timeoutMs: opts.timeoutMs ?? 2_000,
      maxEntries: opts.maxEntries ?? 50_000,
    };
    this.#cache = new VerdictCache(this.#opts.maxEntries);
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
    const key = `${tokenHash(token)}|${audiences.join(' ')}`;
    const exp = typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : undefined;
    try {
      return await this.#cache.getOrLoad(key, ctx.now, () => this.#review(token, audiences, exp));
    } catch (e) {
      return { kind: 'unavailable', cause: e };
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
