import { type CompiledLimit, type CompiledQuotaPolicy, windowMs } from '../policy/quotaPolicy.js';
import { calendarPeriod } from './calendar.js';
import type { PolicyLimit } from './headers.js';
import type { LimitCheck } from './store.js';

/** An override's own limits (quota_overrides.limits), as the tier limits they replace. */
export interface OverrideLimit {
  readonly name?: string;
  readonly requests: number;
  readonly window?: string;
  readonly calendar?: string;
}

export function overrideLimits(limits: readonly OverrideLimit[]): CompiledLimit[] {
  return limits.map((l) => ({
    name: l.name ?? l.window ?? (l.calendar ?? 'limit').toLowerCase(),
    requests: l.requests,
    ...(l.window
      ? { windowMs: windowMs(l.window, 'override') }
      : { calendar: l.calendar as NonNullable<CompiledLimit['calendar']> }),
  }));
}

/**
 * The store's view of `limits` for one subject: keys
 * nox:q:{<subject hash>}:<policy tag>:<tier, or "override">:<limit>[:<calendar period>].
 * The braces put every key of one subject in one Redis Cluster slot, so a check is one round
 * trip; the subject is hashed so that no user id or API key appears in Redis. The sidecar
 * charges these keys; the admin API reads the same ones.
 */
export function limitChecks(
  policy: CompiledQuotaPolicy,
  tier: string,
  subject: string,
  limits: readonly CompiledLimit[],
  now: number,
): { checks: LimitCheck[]; limits: PolicyLimit[] } {
  const prefix = `nox:q:{${subject}}:${policy.keyTag}:${tier}:`;
  const checks: LimitCheck[] = [];
  const shown: PolicyLimit[] = [];
  for (const l of limits) {
    if (l.windowMs !== undefined) {
      checks.push({ key: `${prefix}${l.name}`, requests: l.requests, windowMs: l.windowMs });
      shown.push({ name: l.name, requests: l.requests, windowS: l.windowMs / 1000 });
    } else {
      const period = calendarPeriod(l.calendar!, now, policy.timeZone);
      checks.push({ key: `${prefix}${l.name}:${period.id}`, requests: l.requests, resetAt: period.endsAt });
      shown.push({ name: l.name, requests: l.requests, windowS: Math.ceil((period.endsAt - now) / 1000) });
    }
  }
  return { checks, limits: shown };
}
