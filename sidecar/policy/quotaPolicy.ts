import { createHash } from 'node:crypto';
import type { QuotaPolicySpec } from '../../common/resources/types.gen.js';
import type { MatchSpec } from './router.js';
import { RouteIndex } from './router.js';

export class CompileError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

export type Calendar = 'Day' | 'Week' | 'Month' | 'Year';

export interface CompiledLimit {
  /** Stable id within the policy: used in Redis keys and RateLimit-Policy. */
  readonly name: string;
  readonly requests: number;
  /** Rolling window (GCRA), milliseconds; absent for calendar limits. */
  readonly windowMs?: number;
  readonly calendar?: Calendar;
  /** Narrower match within the policy's routes; undefined applies to all of them. */
  readonly match?: RouteIndex<true>;
}

export interface CompiledTier {
  readonly name: string;
  readonly limits: readonly CompiledLimit[];
}

export interface CompiledQuotaPolicy {
  readonly key: string;
  /** Short hash of the key, for Redis keys; computed once here rather than on every check. */
  readonly keyTag: string;
  readonly mode: 'Enforce' | 'DryRun';
  readonly failureMode: 'Open' | 'Closed';
  readonly subject: QuotaPolicySpec['subject'];
  readonly tiers: ReadonlyMap<string, CompiledTier>;
  readonly defaultTier: string;
  readonly tierClaim?: string;
  readonly tierGroups: readonly { group: string; tier: string }[];
  /** First match wins; a cost rule without a match applies to every request. */
  readonly costs: readonly { match?: RouteIndex<true>; cost: number }[];
  readonly timeZone: string;
}

const unitMs = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;
const maxWindowMs = 366 * unitMs.d;

export function windowMs(window: string, field: string): number {
  const m = /^([1-9][0-9]{0,5})(s|m|h|d|w)$/.exec(window);
  if (!m) throw new CompileError(field, `"${window}" is not a window like 1s, 1h, 1d`);
  const ms = Number(m[1]) * unitMs[m[2] as keyof typeof unitMs];
  if (ms > maxWindowMs) throw new CompileError(field, `"${window}" is longer than 366d`);
  return ms;
}

function index(match: MatchSpec | undefined): RouteIndex<true> | undefined {
  if (!match || (!match.hosts?.length && !match.paths?.length && !match.methods?.length)) return undefined;
  const i = new RouteIndex<true>();
  i.add(match, true);
  return i;
}

export function compileQuotaPolicy(key: string, spec: QuotaPolicySpec): CompiledQuotaPolicy {
  try {
    new Intl.DateTimeFormat('en', { timeZone: spec.timeZone });
  } catch {
    throw new CompileError('spec.timeZone', `unknown time zone "${spec.timeZone}"`);
  }
  const tiers = new Map<string, CompiledTier>();
  spec.tiers.forEach((t, ti) => {
    const names = new Set<string>();
    const limits = t.limits.map((l, li): CompiledLimit => {
      const field = `spec.tiers[${ti}].limits[${li}]`;
      const name = l.name ?? l.window ?? l.calendar!.toLowerCase();
      if (names.has(name))
        throw new CompileError(`${field}.name`, `two limits of tier ${t.name} are both named "${name}"`);
      names.add(name);
      const match = index(l.match);
      return {
        name,
        requests: l.requests,
        ...(l.window
          ? { windowMs: windowMs(l.window, `${field}.window`) }
          : { calendar: l.calendar as Calendar }),
        ...(match ? { match } : {}),
      };
    });
    tiers.set(t.name, { name: t.name, limits });
  });
  return {
    key,
    keyTag: createHash('sha256').update(key).digest('base64url').slice(0, 8),
    mode: spec.mode,
    failureMode: spec.failureMode,
    subject: spec.subject,
    tiers,
    defaultTier: spec.defaultTier,
    ...(spec.tierFrom?.claim ? { tierClaim: spec.tierFrom.claim } : {}),
    tierGroups: spec.tierFrom?.groups ?? [],
    costs: (spec.costs ?? []).map((c) => {
      const match = index(c.match);
      return { ...(match ? { match } : {}), cost: c.cost };
    }),
    timeZone: spec.timeZone,
  };
}
