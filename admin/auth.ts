import { createHash } from 'node:crypto';
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

export class KubeAuth {
  readonly #callers = new Map<string, Cached<Caller | undefined>>();
  readonly #decisions = new Map<string, Cached<{ allowed: boolean; reason: string }>>();

  constructor(
    private readonly client: KubeClient,
    private readonly cacheMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** The caller a bearer token stands for; throws Unauthenticated. */
  async authenticate(authorization: string | undefined): Promise<Caller> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) throw new Unauthenticated('a bearer token is required (Authorization: Bearer <token>)');
    const token = m[1]!;
    const key = digest(token);
    const hit = this.#fresh(this.#callers, key);
    const caller = hit ? hit.value : await this.#review(token, key);
    if (!caller) throw new Unauthenticated('the token is not valid for this cluster');
    return caller;
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
