import type { Identity } from '../request/identity.js';

interface Entry {
  readonly identity: Identity;
  readonly providerKey: string;
  readonly expiresAt: number;
}

/**
 * Verified tokens until they expire, keyed by a hash of the token (never the token), in a
 * bounded map evicting the least recently used.
 */
export class TokenCache {
  readonly #entries = new Map<string, Entry>();

  constructor(private readonly maxEntries = 50_000) {}

  get size(): number {
    return this.#entries.size;
  }

  get(hash: string, now: number): Entry | undefined {
    const e = this.#entries.get(hash);
    if (!e) return undefined;
    this.#entries.delete(hash);
    if (e.expiresAt <= now) return undefined;
    this.#entries.set(hash, e); // most recently used goes last
    return e;
  }

  set(hash: string, entry: Entry): void {
    this.#entries.delete(hash);
    this.#entries.set(hash, entry);
    if (this.#entries.size > this.maxEntries) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
  }

  delete(hash: string): void {
    this.#entries.delete(hash);
  }

  /** Drop every entry of a provider (its configuration changed). */
  dropProvider(providerKey: string): void {
    for (const [k, e] of this.#entries) if (e.providerKey === providerKey) this.#entries.delete(k);
  }
}
