import { createHash } from 'node:crypto';

/** Cache key of a credential: never the credential itself. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}

/** What a load decided, and until when it may be reused (0 or past: not cached at all). */
export interface Loaded<V> {
  readonly value: V;
  readonly expiresAt: number;
}

export interface VerdictCacheOptions<V> {
  /** Rejections: kept in a map of their own, so a flood of bad credentials never evicts good ones. */
  readonly isNegative?: (v: V) => boolean;
  readonly maxNegative?: number;
  /** Called on every answer taken from the negative map (metrics). */
  readonly onNegativeHit?: () => void;
}

/**
 * Outcomes of checking a credential against a remote authority (TokenReview, introspection,
 * a user API), in bounded maps evicting the least recently used: one for acceptances, one
 * (smaller, when `isNegative` is given) for rejections. Concurrent checks of the same key
 * share one load, so a burst of requests with a new token makes one call.
 */
export class VerdictCache<V> {
  readonly #entries = new Map<string, Loaded<V>>();
  readonly #negatives = new Map<string, Loaded<V>>();
  readonly #inflight = new Map<string, Promise<Loaded<V>>>();

  constructor(
    private readonly maxEntries = 50_000,
    private readonly opts: VerdictCacheOptions<V> = {},
  ) {}

  get size(): number {
    return this.#entries.size + this.#negatives.size;
  }

  get(key: string, now: number): V | undefined {
    const hit = lookup(this.#entries, key, now);
    if (hit !== undefined || this.#negatives.size === 0) return hit;
    const neg = lookup(this.#negatives, key, now);
    if (neg !== undefined) this.opts.onNegativeHit?.();
    return neg;
  }

  set(key: string, value: V, expiresAt: number): void {
    const negative = this.opts.isNegative?.(value) === true;
    const map = negative ? this.#negatives : this.#entries;
    (negative ? this.#entries : this.#negatives).delete(key);
    map.delete(key);
    map.set(key, { value, expiresAt });
    if (map.size > (negative ? (this.opts.maxNegative ?? this.maxEntries) : this.maxEntries)) {
      const oldest = map.keys().next().value;
      if (oldest !== undefined) map.delete(oldest);
    }
  }

  /** The cached value, else the result of the load already running for `key`, else of a new one. */
  async getOrLoad(key: string, now: number, load: () => Promise<Loaded<V>>): Promise<V> {
    const hit = this.get(key, now);
    if (hit !== undefined) return hit;
    let running = this.#inflight.get(key);
    if (!running) {
      running = load().finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, running);
      const { value, expiresAt } = await running;
      if (expiresAt > Date.now()) this.set(key, value, expiresAt);
      return value;
    }
    return (await running).value;
  }

  /** Drops every entry whose key starts with `prefix` (a token revoked, a provider changed). */
  deletePrefix(prefix: string): void {
    for (const map of [this.#entries, this.#negatives])
      for (const k of map.keys()) if (k.startsWith(prefix)) map.delete(k);
  }

  delete(key: string): void {
    this.#entries.delete(key);
    this.#negatives.delete(key);
  }

  clear(): void {
    this.#entries.clear();
    this.#negatives.clear();
  }
}

function lookup<V>(map: Map<string, Loaded<V>>, key: string, now: number): V | undefined {
  const e = map.get(key);
  if (!e) return undefined;
  map.delete(key);
  if (e.expiresAt <= now) return undefined;
  map.set(key, e); // most recently used goes last
  return e.value;
}
