import * as oidc from 'openid-client';
import { FanoutGuards, type MethodEnv, NegativeCache } from '../identity/fanout.js';
import type { IdentityMethod, MethodResult } from '../identity/method.js';
import type { Ctx } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Snapshot } from '../policy/snapshot.js';
import type { Identity } from '../request/identity.js';
import type { CheckInput } from '../request/input.js';
import { parseCookies } from './cookies.js';
import { describeError, type Login } from './login.js';
import type { LoginProvider } from './providers.js';
import { identityOf, nextRecord, openTokens, UnusableTokens } from './records.js';
import { isSessionId, type SessionRecord, sessionHash } from './sessionStore.js';

export interface SessionMethodOptions {
  /** How long a sidecar answers from its own copy of a session; revocations reach it sooner (pub/sub). */
  readonly cacheMs: number;
  readonly maxCached: number;
  /** How long a request with an expired access token waits for another sidecar's refresh. */
  readonly waitMs: number;
  /** The refresh lock's lifetime: longer than a token request can take (openid-client times out at 5 s). */
  readonly lockMs: number;
  /** After a failed refresh (provider unreachable), the next attempt for that session waits this long. */
  readonly retryMs: number;
  /** A session id the store does not know is answered locally (anonymous) for this long. */
  readonly missingMs: number;
}

const defaults: SessionMethodOptions = {
  cacheMs: 1000,
  maxCached: 10_000,
  waitMs: 1000,
  lockMs: 10_000,
  retryMs: 5000,
  missingMs: 30_000,
};

/** Session cookies of one request whose ids are even hashed; the rest are ignored unread. */
const MAX_SESSION_COOKIES = 4;

interface Cached {
  readonly record: SessionRecord;
  readonly identity: Identity;
  readonly until: number;
}

/**
 * The session cookie of the browser login. The session is read from the store (or this
 * sidecar's copy, at most `cacheMs` old and dropped at once on a revocation), and its access
 * token refreshed once it expires within refreshBefore: once per session across all
 * sidecars (a lock in the store), in the background while the token is still valid. A
 * refresh that fails for a transient reason never ends a session; only the provider refusing
 * the refresh token does. An unknown or expired session is anonymous, and its cookie is cleared.
 */
export class SessionMethod implements IdentityMethod {
  readonly name = 'session';
  readonly #opts: SessionMethodOptions;
  readonly #cache = new Map<string, Cached>();
  readonly #refreshing = new Map<string, Promise<SessionRecord | undefined>>();
  readonly #retryAt = new Map<string, number>();
  /** Session ids the store did not know (by hash): a new id is always random, so "missing" stays true. */
  readonly #missing: NegativeCache;
  /** Store reads in flight by hash: requests with the same cookie share one read. */
  readonly #reading = new Map<string, Promise<SessionRecord | undefined>>();
  #env: MethodEnv = { guards: new FanoutGuards() };
  /** Bumped by every revocation: a read that raced one is used once, never cached. */
  #epoch = 0;

  constructor(
    private readonly login: Login,
    opts: Partial<SessionMethodOptions> = {},
  ) {
    this.#opts = { ...defaults, ...opts };
    this.#missing = new NegativeCache(this.#opts.missingMs);
    login.store.onRevoked((hash) => {
      this.#epoch++;
      if (hash === '*') this.#cache.clear();
      else this.#cache.delete(hash);
    });
  }

  attach(env: MethodEnv): void {
    this.#env = env;
  }

  onSnapshot(s: Snapshot): void {
    this.login.providers.warm(s);
  }

  async identify(input: CheckInput, ctx: Ctx, policy: CompiledAccessPolicy): Promise<MethodResult> {
    const accepting = this.login.providers.accepting(ctx.snapshot, policy);
    if (accepting.length === 0 || !input.headers.cookie) return { kind: 'absent' };
    const cookies = parseCookies(input.headers.cookie);
    // At most one session is looked up per request: the first session cookie (in the order
    // the browser sent them, of the route's providers in order) whose id is well formed and
    // not known to be missing. Others are ignored; a request cannot multiply store reads.
    let stale: LoginProvider | undefined;
    let chosen: { hash: string; p: LoginProvider } | undefined;
    let examined = 0;
    for (const name of new Set(accepting.map((p) => p.cookie.name))) {
      const p = accepting.find((c) => c.cookie.name === name)!;
      for (const id of cookies.get(name) ?? []) {
        if (chosen || examined >= MAX_SESSION_COOKIES) {
          this.#env.guards.localReject(this.name, 'extra_cookie');
          break;
        }
        examined++;
        if (!isSessionId(id)) {
          this.#env.guards.localReject(this.name, 'shape');
          stale ??= p;
          continue;
        }
        const hash = sessionHash(id);
        if (this.#missing.get(hash, ctx.now) !== undefined) {
          this.#env.guards.negativeHit(this.name);
          stale ??= p;
          continue;
        }
        chosen = { hash, p };
      }
    }
    if (chosen) {
      let session: Cached | undefined;
      try {
        session = await this.#session(chosen.hash, ctx);
      } catch (e) {
        return { kind: 'unavailable', cause: e };
      }
      if (!session) stale ??= chosen.p;
      // A session of a provider this route does not accept: valid elsewhere, so its cookie stays.
      else if (accepting.some((c) => c.key === session.record.provider))
        return { kind: 'identified', identity: session.identity };
    }
    // The response phase (stages/loginResponse.ts) clears it.
    if (stale) ctx.staleSessionCookie = stale.cookie;
    return { kind: 'absent' };
  }

  async #session(hash: string, ctx: Ctx): Promise<Cached | undefined> {
    const now = ctx.now;
    const hit = this.#cache.get(hash);
    if (hit && hit.until > now) return hit;
    const epoch = this.#epoch;
    let read = this.#reading.get(hash);
    if (!read) {
      const guard = this.#env.guards.guard('redis_sessions', 'sessions');
      read = guard.run(() => this.login.store.get(hash)).finally(() => this.#reading.delete(hash));
      this.#reading.set(hash, read);
    }
    let record = await read;
    const p = record && this.login.providers.index(ctx.snapshot).byKey.get(record.provider);
    if (!record || !p || record.expiresAt <= now) {
      this.#cache.delete(hash);
      // Gone for good (never issued, expired or revoked); a provider missing from the policy may come back.
      if (!record || record.expiresAt <= now) this.#missing.set(hash, 'missing', now);
      return undefined;
    }
    record = await this.#fresh(p, hash, record, ctx);
    if (!record) {
      this.#cache.delete(hash);
      return undefined;
    }
    const entry = { record, identity: identityOf(p, record), until: now + this.#opts.cacheMs };
    const due = refreshDue(p, record);
    const until = Math.min(entry.until, record.expiresAt, due);
    if (until > now && epoch === this.#epoch) {
      if (this.#cache.size >= this.#opts.maxCached) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(hash, { ...entry, until });
    }
    return entry;
  }

  /** The session with a usable access token; undefined when the provider has ended it. */
  async #fresh(
    p: LoginProvider,
    hash: string,
    seen: SessionRecord,
    ctx: Ctx,
  ): Promise<SessionRecord | undefined> {
    if (ctx.now < refreshDue(p, seen) || (this.#retryAt.get(hash) ?? 0) > ctx.now) return seen;
    const expired = ctx.now >= seen.accessExpiresAt;
    let job = this.#refreshing.get(hash);
    if (!job) {
      job = this.#refresh(p, hash, seen, expired).finally(() => this.#refreshing.delete(hash));
      this.#refreshing.set(hash, job);
    }
    // Still valid: this request goes on with it while the refresh runs.
    if (!expired) return seen;
    return job;
  }

  async #refresh(p: LoginProvider, hash: string, seen: SessionRecord, wait: boolean) {
    const store = this.login.store;
    let lock: string | undefined;
    try {
      lock = await store.tryLock(hash, this.#opts.lockMs);
    } catch (e) {
      return this.#failed(p, hash, seen, e);
    }
    if (!lock) return wait ? this.#awaitOther(hash, seen) : seen;
    try {
      // Re-read under the lock: another sidecar may have refreshed between our read and the lock.
      const current = await store.get(hash);
      if (!current) return undefined;
      if (current.accessExpiresAt !== seen.accessExpiresAt && Date.now() < refreshDue(p, current)) {
        this.login.refreshes.inc({ result: 'current' });
        return current;
      }
      const keyring = this.login.providers.keyring(p);
      const tokens = openTokens(keyring, hash, current);
      if (!tokens?.refresh) {
        // The key that sealed it is gone from the Secret: the session cannot be refreshed any more.
        await this.login.revoke(hash, 'provider');
        this.#ended(hash, current, 'the key that sealed its tokens is gone');
        return undefined;
      }
      const res = await oidc.refreshTokenGrant(await this.login.providers.config(p), tokens.refresh);
      const next = nextRecord(p, keyring, hash, res, Date.now(), { record: current, tokens });
      if (!(await store.replace(hash, next))) return undefined;
      this.login.refreshes.inc({ result: 'refreshed' });
      this.login.sessionEvent({
        kind: 'refresh',
        provider: next.provider,
        subject: next.subject,
        sessionHash: hash,
      });
      this.#retryAt.delete(hash);
      return next;
    } catch (e) {
      if (refused(e)) {
        this.login.refreshes.inc({ result: 'ended' });
        this.login.log.info({ provider: p.key, err: describeError(e) }, 'session ended: refresh refused');
        await this.login.revoke(hash, 'provider').catch(() => undefined);
        this.#ended(hash, seen, 'the provider refused the refresh token');
        return undefined;
      }
      return this.#failed(p, hash, seen, e);
    } finally {
      await store.unlock(hash, lock).catch(() => undefined);
    }
  }

  #ended(hash: string, r: SessionRecord, reason: string): void {
    this.login.sessionEvent({
      kind: 'revocation',
      provider: r.provider,
      subject: r.subject,
      sessionHash: hash,
      reason,
    });
  }

  /** Another sidecar holds the lock: poll until its refresh lands (or the wait is over; the session stands). */
  async #awaitOther(hash: string, seen: SessionRecord): Promise<SessionRecord | undefined> {
    const deadline = Date.now() + this.#opts.waitMs;
    let latest: SessionRecord | undefined = seen;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
      latest = await this.login.store.get(hash).catch(() => latest);
      if (!latest || latest.accessExpiresAt !== seen.accessExpiresAt) break;
    }
    this.login.refreshes.inc({ result: 'current' });
    return latest;
  }

  #failed(p: LoginProvider, hash: string, seen: SessionRecord, e: unknown): SessionRecord {
    this.login.refreshes.inc({ result: 'error' });
    this.login.log.warn({ provider: p.key, err: describeError(e) }, 'session refresh failed; retrying later');
    this.#retryAt.set(hash, Date.now() + this.#opts.retryMs);
    if (this.#retryAt.size > this.#opts.maxCached) this.#retryAt.clear();
    return seen;
  }
}

/** When the access token should be renewed; never, when there is no refresh token or no known expiry. */
function refreshDue(p: LoginProvider, r: SessionRecord): number {
  if (!r.hasRefreshToken || r.accessExpiresAt === 0) return Number.POSITIVE_INFINITY;
  return r.accessExpiresAt - p.refreshBeforeMs;
}

/**
 * Only the provider saying no ends a session: the grant is gone (RFC 6749 §5.2 invalid_grant)
 * or the new ID token is not this user's. Anything else (timeouts, 5xx, a bug) leaves it standing.
 */
function refused(e: unknown): boolean {
  return (e instanceof oidc.ResponseBodyError && e.error === 'invalid_grant') || e instanceof UnusableTokens;
}
