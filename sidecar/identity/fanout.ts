import { Counter, Gauge, type Registry } from 'prom-client';
import { definitions, type GuardLimits } from '../settings/settings.js';
import type { Revocations } from './revocations.js';

export type { GuardLimits };

/**
 * Bounded fan-out: what one request, or a flood of made-up credentials, can cost the
 * dependencies identity asks (Redis for sessions, the API server for TokenReview, each
 * introspection endpoint, the GitHub API). Every remote check runs through the guard of its
 * dependency: at most `maxInFlight` at once and, where set, a token bucket of remote checks
 * per second. A check over either bound is not queued: it fails at once with `Busy`, which
 * the identify stage answers with IDENTITY_DEPENDENCY_BUSY (503, Retry-After: 1). Cache hits
 * (positive or negative) never touch a guard, so valid cached credentials cost what they did.
 *
 * The bounds are settings (NOX_FANOUT_*, settings.ts), documented in the README (identity:
 * bounded fan-out).
 */
/** The dependency kinds, each with its bound. */
export interface FanoutLimits {
  /** The session store (Redis): one GET per request at most; the cap only stops a pile-up when it is slow. */
  readonly sessions: GuardLimits;
  /** TokenReview: every ServiceAccount token that passes the local checks (signature by the cluster's keys, issuer, exp). */
  readonly tokenReview: GuardLimits;
  /** Per introspection endpoint (per OAuth2Provider). */
  readonly introspection: GuardLimits;
  /** Per GitHub API origin: GitHub blocks an address that sends many bad credentials. */
  readonly github: GuardLimits;
}

export type FanoutKind = keyof FanoutLimits;

/** The settings' defaults (NOX_FANOUT_*). */
export const defaultFanoutLimits: FanoutLimits = {
  sessions: definitions.fanoutSessions.default,
  tokenReview: definitions.fanoutTokenReview.default,
  introspection: definitions.fanoutIntrospection.default,
  github: definitions.fanoutGithub.default,
};

/** Negative caches: how many rejected credentials are remembered (by hash) per method, and for how long. */
export const negativeCacheLimits = { maxEntries: 10_000 } as const;

/** A remote check refused because its dependency is at its bound; no call was made. */
export class Busy extends Error {
  override readonly name = 'Busy';
  constructor(
    readonly dependency: string,
    readonly bound: 'concurrency' | 'rate',
  ) {
    super(`${dependency}: ${bound === 'concurrency' ? 'too many checks in flight' : 'check rate exceeded'}`);
  }
}

/** The guard of one dependency: a concurrency cap and an optional token bucket. */
export class DependencyGuard {
  #inFlight = 0;
  #tokens: number;
  #refilledAt: number;

  constructor(
    readonly dependency: string,
    readonly limits: GuardLimits,
    private readonly metrics: FanoutMetrics,
  ) {
    this.#tokens = limits.burst ?? limits.ratePerSec ?? 0;
    this.#refilledAt = Date.now();
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Runs `call` if the dependency has room; otherwise throws Busy without calling. */
  async run<T>(call: () => Promise<T>): Promise<T> {
    if (this.#inFlight >= this.limits.maxInFlight) throw this.#reject('concurrency');
    const rate = this.limits.ratePerSec;
    if (rate !== undefined) {
      const now = Date.now();
      const burst = this.limits.burst ?? rate;
      this.#tokens = Math.min(burst, this.#tokens + ((now - this.#refilledAt) * rate) / 1000);
      this.#refilledAt = now;
      if (this.#tokens < 1) throw this.#reject('rate');
      this.#tokens -= 1;
    }
    this.#inFlight++;
    this.metrics.calls.inc({ dependency: this.dependency });
    try {
      return await call();
    } finally {
      this.#inFlight--;
    }
  }

  #reject(bound: 'concurrency' | 'rate'): Busy {
    this.metrics.rejected.inc({ dependency: this.dependency, bound });
    return new Busy(this.dependency, bound);
  }
}

interface FanoutMetrics {
  readonly calls: Counter<'dependency'>;
  readonly rejected: Counter<'dependency' | 'bound'>;
  readonly negativeHits: Counter<'method'>;
  readonly localRejects: Counter<'method' | 'check'>;
}

/**
 * The guards of one sidecar, by dependency name, and the metrics of all of them. Labels are
 * dependency names ("redis_sessions", "tokenreview", "introspection:<ns>/<provider>",
 * "github:<api host>"), method names and fixed check names: never a credential.
 */
export class FanoutGuards {
  readonly #guards = new Map<string, DependencyGuard>();
  readonly #metrics: FanoutMetrics;

  constructor(
    registry?: Registry,
    private readonly limits: FanoutLimits = defaultFanoutLimits,
  ) {
    const registers = registry ? [registry] : [];
    const guards = this.#guards;
    const inFlight: Gauge<'dependency'> = new Gauge({
      name: 'nox_identity_dependency_in_flight',
      help: 'Remote identity checks running now, per dependency (bounded by its concurrency cap).',
      labelNames: ['dependency'],
      registers,
      collect() {
        for (const g of guards.values()) inFlight.set({ dependency: g.dependency }, g.inFlight);
      },
    });
    this.#metrics = {
      calls: new Counter({
        name: 'nox_identity_dependency_calls_total',
        help: 'Remote identity checks started, per dependency (cache hits and refused checks are not calls).',
        labelNames: ['dependency'],
        registers,
      }),
      rejected: new Counter({
        name: 'nox_identity_dependency_rejected_total',
        help: 'Remote identity checks refused without a call because the dependency was at its bound (concurrency or rate); each is an IDENTITY_DEPENDENCY_BUSY deny.',
        labelNames: ['dependency', 'bound'],
        registers,
      }),
      negativeHits: new Counter({
        name: 'nox_identity_negative_cache_hits_total',
        help: 'Credentials rejected from the negative cache (found invalid shortly before), per method: no remote check made.',
        labelNames: ['method'],
        registers,
      }),
      localRejects: new Counter({
        name: 'nox_identity_local_rejects_total',
        help: 'Credentials rejected by a local check before any remote one, per method and check (shape, prefix, issuer, signature, expiry, extra cookies).',
        labelNames: ['method', 'check'],
        registers,
      }),
    };
  }

  /** The guard of `dependency`, created with the bound of its kind the first time it is asked for. */
  guard(dependency: string, kind: FanoutKind): DependencyGuard {
    let g = this.#guards.get(dependency);
    if (!g) {
      g = new DependencyGuard(dependency, this.limits[kind], this.#metrics);
      this.#guards.set(dependency, g);
    }
    return g;
  }

  negativeHit(method: string): void {
    this.#metrics.negativeHits.inc({ method });
  }

  localReject(method: string, check: string): void {
    this.#metrics.localRejects.inc({ method, check });
  }
}

/** What the identify stage hands every method once: shared guards and the revocation list. */
export interface MethodEnv {
  readonly guards: FanoutGuards;
  readonly revocations?: Revocations | undefined;
}

/**
 * Rejected credentials by hash (never the credential), for a short time, in a bounded map
 * evicting the oldest: a credential found invalid is refused again without a remote check.
 * Kept apart from the positive caches so a flood of bad credentials cannot evict good ones.
 */
export class NegativeCache {
  readonly #until = new Map<string, { until: number; reason: string }>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number = negativeCacheLimits.maxEntries,
  ) {}

  get size(): number {
    return this.#until.size;
  }

  /** The reason `key` was rejected, if that is still remembered. */
  get(key: string, now: number): string | undefined {
    const e = this.#until.get(key);
    if (!e) return undefined;
    if (e.until > now) return e.reason;
    this.#until.delete(key);
    return undefined;
  }

  set(key: string, reason: string, now: number, ttlMs = this.ttlMs): void {
    this.#until.delete(key);
    this.#until.set(key, { until: now + ttlMs, reason });
    if (this.#until.size > this.maxEntries) {
      const oldest = this.#until.keys().next().value;
      if (oldest !== undefined) this.#until.delete(oldest);
    }
  }

  delete(key: string): void {
    this.#until.delete(key);
  }

  deletePrefix(prefix: string): void {
    for (const k of this.#until.keys()) if (k.startsWith(prefix)) this.#until.delete(k);
  }

  clear(): void {
    this.#until.clear();
  }
}
