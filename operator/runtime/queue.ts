import { exponentialDelay } from '../../common/backoff.js';

/**
 * The work queue of one controller (client-go's workqueue semantics):
 *
 * - keyed and de-duplicating: a key added many times before a worker takes it runs once;
 * - per-key serialization: a key is handed to one worker at a time; if it is added while
 *   being processed it is marked dirty and handed out again after `done()`, so the change
 *   that caused the add is never lost and never reconciled concurrently;
 * - rate-limited retries: `addRateLimited` delays a key by its own exponential backoff
 *   (reset by `forget` after a success) and by an overall token bucket, whichever is longer;
 * - delayed adds (`addAfter`) for "requeue after": the earliest pending time wins.
 */

export interface RateLimiterOptions {
  /** First retry delay of a key, doubled per consecutive failure. Default 200 ms. */
  baseDelayMs?: number;
  /** Cap of a key's retry delay. Default 30 s. */
  maxDelayMs?: number;
  /** Retries of all keys together, per second (token bucket). Default 10. */
  qps?: number;
  /** Bucket size. Default 100. */
  burst?: number;
}

export interface WorkQueueOptions extends RateLimiterOptions {
  /** Called with the number of ready keys whenever it changes (for a gauge). */
  onDepth?: (depth: number) => void;
}

export class WorkQueue {
  readonly #ready: string[] = [];
  /** Keys that need processing: waiting in #ready, or re-added while being processed. */
  readonly #dirty = new Set<string>();
  readonly #processing = new Set<string>();
  readonly #delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  readonly #failures = new Map<string, number>();
  #getters: ((key: string | undefined) => void)[] = [];
  #idle: (() => void)[] = [];
  #shuttingDown = false;
  readonly #base: number;
  readonly #max: number;
  readonly #qps: number;
  readonly #burst: number;
  #tokens: number;
  #tokensAt = Date.now();
  readonly #onDepth: ((depth: number) => void) | undefined;

  constructor(opts: WorkQueueOptions = {}) {
    this.#base = opts.baseDelayMs ?? 200;
    this.#max = opts.maxDelayMs ?? 30_000;
    this.#qps = opts.qps ?? 10;
    this.#burst = opts.burst ?? 100;
    this.#tokens = this.#burst;
    this.#onDepth = opts.onDepth;
  }

  /** Ready keys (not counting delayed ones or those being processed). */
  get length(): number {
    return this.#ready.length;
  }

  get processing(): number {
    return this.#processing.size;
  }

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Keys waiting for a delayed add. */
  get delayed(): number {
    return this.#delayed.size;
  }

  add(key: string): void {
    if (this.#shuttingDown || this.#dirty.has(key)) return;
    this.#dirty.add(key);
    if (this.#processing.has(key)) return; // handed out again by done()
    this.#push(key);
  }

  /** Adds `key` after `ms`; if it is already waiting to be added sooner, nothing changes. */
  addAfter(key: string, ms: number): void {
    if (this.#shuttingDown) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = Date.now() + ms;
    const pending = this.#delayed.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.#delayed.delete(key);
      this.add(key);
    }, ms);
    timer.unref?.();
    this.#delayed.set(key, { at, timer });
  }

  /** Adds `key` after its backoff delay (and the overall rate limit); returns that delay. */
  addRateLimited(key: string): number {
    const n = this.#failures.get(key) ?? 0;
    this.#failures.set(key, n + 1);
    const delay = Math.max(exponentialDelay(n, { initialMs: this.#base, maxMs: this.#max }), this.#reserve());
    this.addAfter(key, delay);
    return delay;
  }

  /** The key succeeded: its next failure starts from the base delay again. */
  forget(key: string): void {
    this.#failures.delete(key);
  }

  /** Consecutive failures of `key` since it was last forgotten. */
  failures(key: string): number {
    return this.#failures.get(key) ?? 0;
  }

  /** The next key to process, or undefined once the queue is shut down. Call done(key) after. */
  get(): Promise<string | undefined> {
    const key = this.#take();
    if (key !== undefined || this.#shuttingDown) return Promise.resolve(key);
    return new Promise((resolve) => this.#getters.push(resolve));
  }

  done(key: string): void {
    if (!this.#processing.delete(key)) return;
    if (this.#dirty.has(key) && !this.#shuttingDown) this.#push(key);
    if (this.#processing.size === 0) {
      const idle = this.#idle;
      this.#idle = [];
      for (const f of idle) f();
    }
  }

  /** Stops handing out keys (waiting get() calls resolve undefined) and drops delayed adds. */
  shutDown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    for (const { timer } of this.#delayed.values()) clearTimeout(timer);
    this.#delayed.clear();
    this.#ready.length = 0;
    this.#dirty.clear();
    this.#depth();
    const getters = this.#getters;
    this.#getters = [];
    for (const g of getters) g(undefined);
  }

  /** Resolves when no key is being processed (after shutDown: when the workers are done). */
  drained(): Promise<void> {
    if (this.#processing.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #push(key: string): void {
    const getter = this.#getters.shift();
    if (getter) {
      this.#dirty.delete(key);
      this.#processing.add(key);
      getter(key);
      return;
    }
    this.#ready.push(key);
    this.#depth();
  }

  #take(): string | undefined {
    const key = this.#ready.shift();
    if (key === undefined) return undefined;
    this.#dirty.delete(key);
    this.#processing.add(key);
    this.#depth();
    return key;
  }

  #depth(): void {
    this.#onDepth?.(this.#ready.length);
  }

  /** Token bucket: 0 while tokens are left, else the wait until the reserved token exists. */
  #reserve(): number {
    const now = Date.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#tokensAt) * this.#qps) / 1000);
    this.#tokensAt = now;
    this.#tokens -= 1;
    return this.#tokens >= 0 ? 0 : Math.ceil((-this.#tokens / this.#qps) * 1000);
  }
}
