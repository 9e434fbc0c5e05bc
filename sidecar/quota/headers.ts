import type { LimitState } from './store.js';

export interface PolicyLimit {
  readonly name: string;
  readonly requests: number;
  /** Window in seconds (for calendar limits: the current period's remaining length). */
  readonly windowS: number;
}

/**
 * IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers): RateLimit-Policy
 * lists the quota policies, RateLimit reports the one closest to exhaustion.
 */
export function rateLimitHeaders(
  limits: readonly PolicyLimit[],
  states: readonly LimitState[],
): Record<string, string> {
  if (limits.length === 0) return {};
  const policy = limits.map((l) => `"${l.name}";q=${l.requests};w=${l.windowS}`).join(', ');
  let tightest = 0;
  for (let i = 1; i < states.length; i++) {
    const a = states[i]!;
    const b = states[tightest]!;
    if (a.remaining < b.remaining || (a.remaining === b.remaining && a.resetMs > b.resetMs)) tightest = i;
  }
  const s = states[tightest]!;
  return {
    'ratelimit-policy': policy,
    ratelimit: `"${limits[tightest]!.name}";r=${s.remaining};t=${Math.ceil(s.resetMs / 1000)}`,
  };
}
