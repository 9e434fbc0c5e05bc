/**
 * Backoff and sleeping, shared by every watch, the work queue, leader election and the
 * sidecar's reconnecting clients.
 */

export interface BackoffOptions {
  /** First retry delay; it doubles per consecutive failure. */
  initialMs?: number;
  /** Cap of the delay. */
  maxMs?: number;
}

/**
 * Exponential backoff with "equal jitter": half the delay is fixed, half random, so many
 * clients that lost the same API server do not come back at the same instant.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}): number {
  const ceiling = exponentialDelay(attempt, {
    initialMs: opts.initialMs ?? 250,
    maxMs: opts.maxMs ?? 30_000,
  });
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

/** initial · 2^attempt, capped at max; no jitter (the work queue's per-key delay). */
export function exponentialDelay(attempt: number, opts: Required<BackoffOptions>): number {
  return Math.min(opts.maxMs, opts.initialMs * 2 ** Math.min(Math.max(attempt, 0), 40));
}

/** Resolves after `ms`, or early (never rejecting) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
