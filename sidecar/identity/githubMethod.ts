import type { OAuth2ProviderSpec } from '../../common/resources/types.gen.js';
import type { Ctx } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Snapshot } from '../policy/snapshot.js';
import type { Identity } from '../request/identity.js';
import type { CheckInput } from '../request/input.js';
import { FanoutGuards, type MethodEnv, negativeCacheLimits } from './fanout.js';
import { type GithubProfile, GithubRejected, githubApiBase, githubProfile } from './githubApi.js';
import { bearerToken } from './jwtMethod.js';
import { type IdentityMethod, type MethodResult, policyNamespace } from './method.js';
import { type Loaded, tokenHash, VerdictCache } from './verdictCache.js';

export interface GithubMethodOptions {
  /** A good token is trusted without asking GitHub again for this long (membership changes show after it). Default 5 min. */
  maxCacheMs?: number;
  /** A rejected token is rejected again without asking for this long. Default 60 s. */
  negativeCacheMs?: number;
  /** One GitHub API call. Default 3 s. */
  timeoutMs?: number;
  /** Pages (of 100) read from /user/orgs and /user/teams. Default 10. */
  maxPages?: number;
}

type Verdict = Extract<MethodResult, { kind: 'identified' | 'invalid' }>;

interface ProviderState {
  readonly digest: string;
  readonly key: string;
  readonly name: string;
  /** API base, e.g. https://api.github.com or https://ghe.example.com/api/v3. */
  readonly api: string;
  /** The fan-out guard's name: "github:<api host>". */
  readonly dependency: string;
  readonly orgs: ReadonlySet<string>;
  readonly teams: ReadonlySet<string>;
  readonly maxTokenBytes: number;
}

/**
 * GitHub's token formats (docs.github.com, "About authentication to GitHub": token
 * prefixes): ghp_ (classic personal access token), github_pat_ (fine-grained), gho_ (OAuth
 * app), ghu_ (GitHub App user-to-server), ghs_ (GitHub App installation), ghr_ (refresh:
 * never an access token, so not accepted), then [A-Za-z0-9_]; GitHub keeps lengths open (up
 * to 255). Tokens issued before April 2021 are 40 hex digits. Anything else is not sent to
 * GitHub: it is not a GitHub token, and another provider's token must not reach GitHub.
 */
const githubToken =
  /^(?:(?:ghp|gho|ghu|ghs)_[A-Za-z0-9_]{1,251}|github_pat_[A-Za-z0-9_]{1,244}|[0-9a-f]{40})$/;

export function looksLikeGithubToken(token: string): boolean {
  return githubToken.test(token);
}

/**
 * GitHub OAuth tokens (opaque), checked through GitHub's REST API: GET /user names the
 * user; /user/orgs and /user/teams are read only when the provider requires membership.
 * Results are cached by token hash. The subject is the numeric user id: logins can be
 * renamed and then taken by someone else.
 */
export class GithubMethod implements IdentityMethod {
  readonly name = 'github';
  readonly #providers = new Map<string, ProviderState>();
  #env: MethodEnv = { guards: new FanoutGuards() };
  readonly #cache = new VerdictCache<Verdict>(50_000, {
    isNegative: (v) => v.kind === 'invalid',
    maxNegative: negativeCacheLimits.maxEntries,
    onNegativeHit: () => this.#env.guards.negativeHit(this.name),
  });
  readonly #opts: Required<GithubMethodOptions>;

  constructor(opts: GithubMethodOptions = {}) {
    this.#opts = {
      maxCacheMs: opts.maxCacheMs ?? 300_000,
      negativeCacheMs: opts.negativeCacheMs ?? 60_000,
      timeoutMs: opts.timeoutMs ?? 3_000,
      maxPages: opts.maxPages ?? 10,
    };
  }

  attach(env: MethodEnv): void {
    this.#env = env;
  }

  onSnapshot(s: Snapshot): void {
    for (const [key, spec] of s.providers) {
      if (spec.type !== 'github') continue;
      const digest = JSON.stringify(spec);
      if (this.#providers.get(key)?.digest === digest) continue;
      this.#cache.deletePrefix(`${key}|`);
      this.#providers.set(key, providerState(key, spec, digest));
    }
    for (const key of this.#providers.keys()) {
      if (s.providers.get(key)?.type === 'github') continue;
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
      .filter((s) => s !== undefined);
    if (candidates.length === 0) return { kind: 'absent' };
    const token = bearerToken(input);
    if (!token) return { kind: 'absent' }; // none, or malformed: JwtMethod reports that
    // GitHub tokens are never JWTs; a JWT belongs to another provider and is not sent to GitHub.
    if (/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token)) return { kind: 'absent' };
    // Local check before the remote one: only GitHub-shaped tokens are sent to GitHub.
    if (!looksLikeGithubToken(token)) {
      // Absent: an opaque token of another provider on the same route is OpaqueTokenMethod's.
      this.#env.guards.localReject(this.name, 'not_github_shape');
      return { kind: 'absent' };
    }
    const hash = tokenHash(token);
    // Revoked through Nox (RedisRevocations, every sidecar within a second): refused before any cache.
    if (this.#env.revocations?.isRevoked(`token:${hash}`, ctx.now))
      return { kind: 'invalid', reason: 'the token was revoked' };
    let invalid: Verdict | undefined;
    for (const s of candidates) {
      if (token.length > s.maxTokenBytes) {
        invalid ??= { kind: 'invalid', reason: 'the token is too large' };
        continue;
      }
      try {
        const v = await this.#cache.getOrLoad(`${s.key}|${hash}`, ctx.now, () =>
          // One guard per GitHub API host, whichever providers point at it.
          this.#env.guards.guard(s.dependency, 'github').run(() => this.#check(s, token)),
        );
        if (v.kind === 'identified') return v;
        invalid ??= v;
      } catch (e) {
        return { kind: 'unavailable', cause: e };
      }
    }
    return invalid ?? { kind: 'absent' };
  }

  async #check(s: ProviderState, token: string): Promise<Loaded<Verdict>> {
    const now = Date.now();
    try {
      const profile = await githubProfile(s, token, this.#opts);
      return {
        value: { kind: 'identified', identity: toIdentity(s, profile) },
        expiresAt: now + this.#opts.maxCacheMs,
      };
    } catch (e) {
      if (!(e instanceof GithubRejected)) throw e;
      return { value: { kind: 'invalid', reason: e.message }, expiresAt: now + this.#opts.negativeCacheMs };
    }
  }
}

function providerState(key: string, spec: OAuth2ProviderSpec, digest: string): ProviderState {
  const api = githubApiBase(spec.endpoints?.userinfo);
  const lower = (xs: readonly string[] | undefined) => new Set((xs ?? []).map((x) => x.toLowerCase()));
  return {
    digest,
    key,
    name: key.split('/').at(-1)!,
    api,
    dependency: `github:${new URL(api).host}`,
    orgs: lower(spec.github?.organizations),
    teams: lower(spec.github?.teams),
    maxTokenBytes: spec.maxTokenBytes,
  };
}

function toIdentity(s: ProviderState, u: GithubProfile): Identity {
  return {
    subject: `${s.name}:${String(u.id)}`,
    provider: s.name,
    method: 'opaque',
    ...(u.email ? { email: u.email } : {}),
    // /user shows the public email, with no statement that it was verified.
    emailVerified: false,
    groups: [...u.groups],
    roles: [],
    scopes: [],
    claims: {
      sub: String(u.id),
      login: u.login,
      ...(u.name ? { name: u.name } : {}),
      ...(u.email ? { email: u.email } : {}),
      ...(u.avatarUrl ? { picture: u.avatarUrl } : {}),
    },
  };
}
