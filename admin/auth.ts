import { createHash } from 'node:crypto';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import type { KubeClient } from '../common/kube/client.js';

/**
 * Who may use the admin API is Kubernetes RBAC's call, as for kubectl: the caller's bearer
 * token is checked with a TokenReview, and each request's permission with a
 * SubjectAccessReview on a nox.dev resource and verb (the admin API's resources are not
 * stored objects; RBAC rules name them all the same). Both answers are cached for a short
 * time, by a hash of the token, never the token itself.
 */

export interface Caller {
  readonly username: string;
  readonly uid?: string;
  readonly groups: readonly string[];
  readonly extra?: Record<string, string[]>;
}

/** What a route needs: `verb` on nox.dev `resource` (cluster-wide, or in `namespace`). */
export interface Permission {
  readonly resource: string;
  readonly verb: 'get' | 'list' | 'create' | 'delete' | 'update';
  readonly subresource?: string;
  readonly namespace?: string;
}

export class Unauthenticated extends Error {}
export class Forbidden extends Error {}

interface Cached<T> {
  readonly value: T;
  readonly until: number;
}

/**
 * OpenID Connect callers, optionally (NOX_ADMIN_OIDC_*): a JWT from the issuer, for the
 * audience, is the user <prefix><sub> with its groups prefixed the same (as the API server's
 * --oidc-*-prefix flags name its own OIDC users), so the same RBAC decides what they may do. With a
 * required group, anyone else from that issuer is not authenticated at all.
 */
export interface OidcOptions {
  readonly issuer: string;
  readonly audience: string;
  readonly groupsClaim: string;
  /** Before the subject and each group (NOX_ADMIN_OIDC_PREFIX). */
  readonly prefix: string;
  readonly requiredGroup?: string;
}

/** After a failed discovery, how long tokens of the issuer are refused without asking again. */
const DISCOVERY_COOLDOWN_MS = 10_000;

export class KubeAuth {
  readonly #callers = new Map<string, Cached<Caller | undefined>>();
  readonly #decisions = new Map<string, Cached<{ allowed: boolean; reason: string }>>();
  #jwks: Promise<ReturnType<typeof createRemoteJWKSet>> | undefined;
  #discoveryFailedAt = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly cacheMs: number,
    private readonly now: () => number = Date.now,
    private readonly oidc?: OidcOptions,
  ) {}

  /** The caller a bearer token stands for; throws Unauthenticated. */
  async authenticate(authorization: string | undefined): Promise<Caller> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) throw new Unauthenticated('a bearer token is required (Authorization: Bearer <token>)');
    const token = m[1]!;
    const key = digest(token);
    const hit = this.#fresh(this.#callers, key);
    if (hit?.value) return hit.value;
    if (this.oidc && issuerOf(token) === this.oidc.issuer) return this.#oidcCaller(token, this.oidc);
    const caller = hit ? hit.value : await this.#review(token, key);
    if (!caller) throw new Unauthenticated('the token is not valid for this cluster');
    return caller;
  }

  /** A JWT of the configured issuer: verified here (signature, issuer, audience, expiry, group). */
  async #oidcCaller(token: string, o: OidcOptions): Promise<Caller> {
    const keys = await this.#keys(o);
    let claims: Record<string, unknown>;
    try {
      ({ payload: claims } = await jwtVerify(token, keys, {
        issuer: o.issuer,
        audience: o.audience,
        requiredClaims: ['sub', 'exp'],
      }));
    } catch (e) {
      throw new Unauthenticated(`the OIDC token is not valid: ${(e as Error).message}`);
    }
    const raw = claims[o.groupsClaim];
    const groups = Array.isArray(raw) ? raw.map(String) : typeof raw === 'string' ? [raw] : [];
    if (o.requiredGroup && !groups.includes(o.requiredGroup))
      throw new Unauthenticated(`the OIDC caller is not in group ${o.requiredGroup}`);
    // Not cached by token: verifying a JWT is local and cheap, and its expiry is then exact.
    return { username: `${o.prefix}${String(claims.sub)}`, groups: groups.map((g) => `${o.prefix}${g}`) };
  }

  /** The issuer's keys: one discovery shared by concurrent requests; a failure is remembered for a while. */
  #keys(o: OidcOptions): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (!this.#jwks && this.now() - this.#discoveryFailedAt < DISCOVERY_COOLDOWN_MS)
      return Promise.reject(new Error(`OIDC discovery for ${o.issuer} failed moments ago`));
    this.#jwks ??= jwksUri(o.issuer).then(
      (uri) => createRemoteJWKSet(new URL(uri)),
      (e: unknown) => {
        this.#jwks = undefined;
        this.#discoveryFailedAt = this.now();
        throw e;
      },
    );
    return this.#jwks;
  }

  /** Throws Forbidden unless RBAC lets `caller` do `p`. */
  async authorize(caller: Caller, p: Permission): Promise<void> {
    const key = digest(JSON.stringify([caller.username, caller.groups, p]));
    const hit = this.#fresh(this.#decisions, key);
    const decision = hit ? hit.value : await this.#access(caller, p, key);
    if (!decision.allowed)
      throw new Forbidden(
        `${caller.username} may not ${p.verb} ${p.resource}${p.subresource ? `/${p.subresource}` : ''}.nox.dev${p.namespace ? ` in ${p.namespace}` : ''}${decision.reason ? `: ${decision.reason}` : ''}`,
      );
  }

  #fresh<T>(map: Map<string, Cached<T>>, key: string): Cached<T> | undefined {
    const hit = map.get(key);
    if (hit && hit.until > this.now()) return hit;
    if (hit) map.delete(key);
    return undefined;
  }

  #remember<T>(map: Map<string, Cached<T>>, key: string, value: T): T {
    if (map.size > 10_000) map.clear(); // bounded: a flood of distinct tokens cannot grow it
    map.set(key, { value, until: this.now() + this.cacheMs });
    return value;
  }

  async #review(token: string, key: string): Promise<Caller | undefined> {
    let review: { status?: { authenticated?: boolean; user?: Caller & { groups?: string[] } } };
    try {
      review = await this.client.request('POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
        body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token } },
        timeoutMs: 5000,
      });
    } catch (e) {
      // The error may echo the request: never let the token out through it.
      throw new Error(`TokenReview failed: HTTP ${(e as { code?: number }).code ?? 'error'}`);
    }
    const user = review.status?.authenticated ? review.status.user : undefined;
    return this.#remember(
      this.#callers,
      key,
      user?.username
        ? {
            username: user.username,
            groups: user.groups ?? [],
            ...(user.uid ? { uid: user.uid } : {}),
            ...(user.extra ? { extra: user.extra } : {}),
          }
        : undefined,
    );
  }

  async #access(caller: Caller, p: Permission, key: string): Promise<{ allowed: boolean; reason: string }> {
    const review = await this.client.request<{ status?: { allowed?: boolean; reason?: string } }>(
      'POST',
      '/apis/authorization.k8s.io/v1/subjectaccessreviews',
      {
        body: {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec: {
            user: caller.username,
            groups: caller.groups,
            ...(caller.uid ? { uid: caller.uid } : {}),
            ...(caller.extra ? { extra: caller.extra } : {}),
            resourceAttributes: {
              group: 'nox.dev',
              resource: p.resource,
              verb: p.verb,
              ...(p.subresource ? { subresource: p.subresource } : {}),
              ...(p.namespace ? { namespace: p.namespace } : {}),
            },
          },
        },
        timeoutMs: 5000,
      },
    );
    return this.#remember(this.#decisions, key, {
      allowed: review.status?.allowed === true,
      reason: review.status?.reason ?? '',
    });
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest('base64url');

/** The iss of a JWT, unverified (to choose who verifies it); undefined for anything else. */
function issuerOf(token: string): string | undefined {
  if (token.split('.').length !== 3) return undefined;
  try {
    const iss = decodeJwt(token).iss;
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}

/** The issuer's jwks_uri, from its discovery document (which must name the same issuer). */
async function jwksUri(issuer: string): Promise<string> {
  const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  const res = await fetch(url, { signal: AbortSignal.timeout(5000), redirect: 'error' });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const doc = (await res.json()) as { issuer?: string; jwks_uri?: string };
  if (doc.issuer !== issuer || !doc.jwks_uri) throw new Error(`${url} does not describe issuer ${issuer}`);
  return doc.jwks_uri;
}
