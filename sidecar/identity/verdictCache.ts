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

/**
 * Outcomes of checking a credential against a remote authority (TokenReview, introspection,
 * a user API), in a bounded map evicting the least recently used. Concurrent checks of
 * the same key share one load, so a burst of requests with a new token makes one call.
 */
export class VerdictCache<V> {
  readonly #entries = new Map<string, Loaded<V>>();
  readonly #inflight = new Map<string, Promise<Loaded<V>>>();

  constructor(private readonly maxEntries = 50_000) {}

  get size(): number {
    return this.#entries.size;
  }

  get(key: string, now: number): V | undefined {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    this.#entries.delete(key);
    if (e.expiresAt <= now) return undefined;
    this.#entries.set(key, e); // most recently used goes last
    return e.value;
  }

  set(key: string, value: V, expiresAt: number): void {
    this.#entries.delete(key);
    this.#entries.set(key, { value, expiresAt });
    if (this.#entries.size > this.maxEntries) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
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
    for (const k of this.#entries.keys()) if (k.startsWith(prefix)) this.#entries.delete(k);
  }

  delete(key: string): void {
    this.#entries.delete(key);
  }

  clear(): void {
    this.#entries.clear();
  }
}
