import { Counter, Histogram, type Registry } from 'prom-client';
import type { Ctx, Stage } from '../pipeline/stage.js';
import type { CompiledQuotaPolicy } from '../policy/quotaPolicy.js';
import { type PolicyLimit, rateLimitHeaders } from '../quota/headers.js';
import { limitChecks, type OverrideLimit, overrideLimits } from '../quota/keys.js';
import type { OverrideLookup } from '../quota/overrides.js';
import type { LimitCheck, QuotaResult, QuotaStore } from '../quota/store.js';
import { policyName, sourceIpPart, subjectHash } from '../quota/subject.js';
import type { UsageEvent } from '../quota/usageRollup.js';
import type { CheckInput } from '../request/input.js';
import type { Deny, Outcome } from '../request/outcome.js';
import { riskObservation } from './risk.js';

export interface QuotaStageOptions {
  readonly overrides?: OverrideLookup;
  readonly usage?: { record(e: UsageEvent): void };
}

interface Plan {
  readonly policy: CompiledQuotaPolicy;
  readonly subject: string;
  readonly tier: string;
  readonly cost: number;
  readonly checks: LimitCheck[];
  readonly limits: PolicyLimit[];
}

type SubjectPart = CompiledQuotaPolicy['subject'][number];

/**
 * The value of one part of the quota key, or undefined when the request lacks it. Every
 * value comes from something the request path verified or observed, never from a header the
 * client can fill in freely: a made-up value must not buy a fresh bucket.
 */
function partValue(part: SubjectPart, input: CheckInput, ctx: Ctx): string | undefined {
  switch (part.type) {
    case 'User':
      return ctx.identity?.subject;
    case 'Client':
      return ctx.identity?.clientId;
    case 'SourceIP':
      // The address Envoy observed, IPv4-mapped IPv6 folded to IPv4 and IPv6 counted per /64.
      return sourceIpPart(input.sourceAddress);
    case 'ApiKey': {
      // Only a key the identify stage matched against the Secrets (AccessPolicy spec.apiKeys)
      // read from this very header; the subject is the key's Secret, so a rotated key keeps
      // its bucket and a made-up one has none.
      const id = ctx.identity;
      const keys = ctx.accessPolicy?.apiKeys;
      if (id?.method !== 'apiKey' || !keys || keys.header.toLowerCase() !== part.name!.toLowerCase()) {
        return undefined;
      }
      return id.subject;
    }
    case 'Header':
      // The client chooses a header's value: it counts only for an authenticated caller, and
      // the caller's identity is part of the key (see subjectParts), so made-up values split
      // that caller's own quota and nobody else's.
      if (!ctx.identity) return undefined;
      return input.headers[part.name!.toLowerCase()] || undefined;
    case 'Claim': {
      const v = ctx.identity?.claims[part.name!];
      return v === undefined || v === null ? undefined : String(v);
    }
  }
}

/** Why a part is missing, for the deny's reason and the metric. */
function missingReason(
  part: SubjectPart,
  input: CheckInput,
  ctx: Ctx,
): { text: string; unverified: boolean } {
  const name = part.name ? `${part.type} ${part.name}` : part.type;
  const header = part.name ? input.headers[part.name.toLowerCase()] : undefined;
  if (part.type === 'ApiKey' && header) {
    return { text: `${name}, and the request has no API key verified from that header`, unverified: true };
  }
  if (part.type === 'Header' && header && !ctx.identity) {
    return { text: `${name}, which counts only for an authenticated caller`, unverified: true };
  }
  return { text: `${name}, which the request lacks`, unverified: false };
}

/**
 * The parts of a request's quota key, or the part it lacks. A policy with a Header part and
 * no User part is keyed by the caller's identity too.
 */
function subjectParts(
  policy: CompiledQuotaPolicy,
  input: CheckInput,
  ctx: Ctx,
): { parts: string[] } | { missing: SubjectPart } {
  const parts: string[] = [];
  let header = false;
  let user = false;
  for (const part of policy.subject) {
    const v = partValue(part, input, ctx);
    if (v === undefined) return { missing: part };
    if (part.type === 'Header') header = true;
    else if (part.type === 'User') user = true;
    parts.push(`${part.type}=${v}`);
  }
  if (header && !user) parts.push(`Caller=${ctx.identity!.subject}`);
  return { parts };
}

function chooseTier(policy: CompiledQuotaPolicy, ctx: Ctx): string {
  const id = ctx.identity;
  if (id && policy.tierClaim) {
    const t = id.claims[policy.tierClaim];
    if (typeof t === 'string' && policy.tiers.has(t)) return t;
  }
  if (id) for (const g of policy.tierGroups) if (id.groups.includes(g.group)) return g.tier;
  return policy.defaultTier;
}

export class QuotaStage implements Stage {
  readonly name = 'quota';
  readonly #checks: Counter<'result'>;
  readonly #storeSeconds: Histogram<'store'>;
  readonly #failures: Counter<'failure_mode'>;
  readonly #usage: Counter<'tier'>;
  readonly #remaining: Histogram<'tier'>;

  constructor(
    private readonly store: QuotaStore,
    registry: Registry,
    private readonly opts: QuotaStageOptions = {},
  ) {
    this.#usage = new Counter({
      name: 'nox_quota_usage_total',
      help: 'Quota charged (requests weighted by cost) by tier.',
      labelNames: ['tier'],
      registers: [registry],
    });
    this.#remaining = new Histogram({
      name: 'nox_quota_remaining_ratio',
      help: 'Share of the tightest limit left after each allowed check, by tier.',
      labelNames: ['tier'],
      buckets: [0, 0.05, 0.1, 0.25, 0.5, 0.75, 1],
      registers: [registry],
    });
    this.#checks = new Counter({
      name: 'nox_quota_checks_total',
      help: 'Quota checks by result: allowed, denied, dry_run_denied, subject_missing, subject_unverified (an API key not verified, a Header part without an authenticated caller), store_error.',
      labelNames: ['result'],
      registers: [registry],
    });
    this.#storeSeconds = new Histogram({
      name: 'nox_quota_store_seconds',
      help: 'Latency of one quota store call (one Redis round trip for the Redis stores).',
      labelNames: ['store'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
      registers: [registry],
    });
    this.#failures = new Counter({
      name: 'nox_quota_store_failure_decisions_total',
      help: 'Checks decided by failureMode because the quota store failed: open (allowed) or closed (denied).',
      labelNames: ['failure_mode'],
      registers: [registry],
    });
  }

  /** A raised (or lowered) limit applies from the next check: no denial outlives its policy. */
  onSnapshot(): void {
    this.store.policyChanged?.();
  }

  async run(input: CheckInput, ctx: Ctx): Promise<Outcome> {
    // A path that reads several ways (the route stage's pathReadings) is counted by every
    // QuotaPolicy and limit any reading falls under: /API/reports cannot dodge /api's quota.
    const paths = ctx.pathReadings ?? [input.path];
    const hits =
      paths.length === 1
        ? ctx.snapshot.quota.lookup(input.host, input.path, input.method)
        : [
            ...new Map(
              paths
                .flatMap((p) => ctx.snapshot.quota.lookup(input.host, p, input.method))
                .map((h) => [h.value, h]),
            ).values(),
          ];
    if (hits.length === 0) return { kind: 'skip' };
    const plans: Plan[] = [];
    const missingDeny: { deny: Deny; unverified: boolean }[] = [];
    for (const { value: policy } of hits) {
      const key = subjectParts(policy, input, ctx);
      if ('missing' in key) {
        const why = missingReason(key.missing, input, ctx);
        const deny: Deny = {
          code: 'QUOTA_SUBJECT_MISSING',
          reason: `QuotaPolicy ${short(policy)} counts per ${why.text}`,
        };
        if (policy.mode === 'Enforce') missingDeny.push({ deny, unverified: why.unverified });
        continue;
      }
      const parts = key.parts;
      const subject = subjectHash(parts);
      const override = this.opts.overrides?.get(subject, policyName(policy.key), ctx.now);
      const tier =
        override?.tier && policy.tiers.has(override.tier) ? override.tier : chooseTier(policy, ctx);
      plans.push(plan(policy, tier, subject, input, paths, ctx.now, override?.limits));
    }
    if (missingDeny.length > 0) {
      const first = missingDeny[0]!;
      this.#checks.inc({ result: first.unverified ? 'subject_unverified' : 'subject_missing' });
      return { kind: 'deny', deny: first.deny };
    }
    if (plans.length === 0) return { kind: 'skip' };

    let results: QuotaResult[];
    const started = performance.now();
    try {
      // A RiskModel scores this request: the plan counting the same subject observes it for
      // the model in its own call (the risk stage makes one otherwise).
      const observe = ctx.riskModel ? riskObservation(input, ctx) : undefined;
      const observer = observe ? plans.findIndex((p) => p.subject === observe.tag) : -1;
      results = await Promise.all(
        plans.map((p, i) =>
          this.store.take(p.checks, p.cost, ctx.now, false, ctx.signal, i === observer ? observe : undefined),
        ),
      );
      if (observer >= 0) ctx.subjectFeatures = results[observer]!.features;
    } catch (cause) {
      this.#checks.inc({ result: 'store_error' });
      const open = plans.every((p) => p.policy.failureMode === 'Open');
      this.#failures.inc({ failure_mode: open ? 'open' : 'closed' });
      return { kind: 'error', code: 'QUOTA_STORE_UNAVAILABLE', cause, failOpen: open };
    } finally {
      this.#storeSeconds.observe({ store: this.store.name }, (performance.now() - started) / 1000);
    }

    const usage = this.opts.usage;
    plans.forEach((p, i) => {
      const r = results[i]!;
      if (usage && p.policy.mode === 'Enforce') {
        usage.record({
          subjectHash: p.subject,
          policy: policyName(p.policy.key),
          tier: p.tier,
          cost: p.cost,
          allowed: r.allowed,
          at: ctx.now,
        });
      }
      if (r.allowed) {
        this.#usage.inc({ tier: p.tier }, p.cost);
        const ratios = r.limits.map((l, j) => l.remaining / (p.checks[j]?.requests ?? 1));
        if (ratios.length > 0) this.#remaining.observe({ tier: p.tier }, Math.min(...ratios));
      }
    });
    // For the audit: the first plan's tier, and the least left of any limit charged.
    let least = Number.POSITIVE_INFINITY;
    for (const r of results) for (const l of r.limits) least = Math.min(least, l.remaining);
    if (plans[0]) ctx.quota = { tier: plans[0].tier, remaining: Number.isFinite(least) ? least : 0 };
    const headers: Record<string, string> = {};
    let denied: { plan: Plan; result: QuotaResult } | undefined;
    let dryRunDenied: { plan: Plan; result: QuotaResult } | undefined;
    plans.forEach((p, i) => {
      const r = results[i]!;
      Object.assign(headers, rateLimitHeaders(p.limits, r.limits));
      if (!r.allowed) {
        if (p.policy.mode === 'DryRun') dryRunDenied ??= { plan: p, result: r };
        else denied ??= { plan: p, result: r };
      }
    });
    if (denied) {
      this.#checks.inc({ result: 'denied' });
      const retryMs = Math.max(...denied.result.limits.filter((l) => !l.allowed).map((l) => l.retryAfterMs));
      return {
        kind: 'deny',
        deny: {
          code: 'QUOTA_EXCEEDED',
          reason: `quota of tier ${denied.plan.tier} in QuotaPolicy ${short(denied.plan.policy)} is used up`,
          headers: { ...headers, 'retry-after': String(Math.max(1, Math.ceil(retryMs / 1000))) },
        },
      };
    }
    const tiers = plans.map((p) => p.tier).join(',');
    if (dryRunDenied) {
      this.#checks.inc({ result: 'dry_run_denied' });
      return {
        kind: 'continue',
        upstreamHeaders: { 'x-nox-tier': tiers },
        responseHeaders: headers,
        dryRunDeny: {
          code: 'QUOTA_EXCEEDED',
          reason: `quota of tier ${dryRunDenied.plan.tier} would be used up`,
        },
      };
    }
    this.#checks.inc({ result: 'allowed' });
    const remaining = headers.ratelimit ? /r=(\d+)/.exec(headers.ratelimit)?.[1] : undefined;
    return {
      kind: 'continue',
      upstreamHeaders: {
        'x-nox-tier': tiers,
        ...(remaining !== undefined ? { 'x-nox-quota-remaining': remaining } : {}),
      },
      responseHeaders: headers,
    };
  }
}

function short(policy: CompiledQuotaPolicy): string {
  return policy.key.slice('QuotaPolicy/'.length);
}

/** The charge of one QuotaPolicy for this request: its tier's limits (or the override's own) that match, and the cost. */
function plan(
  policy: CompiledQuotaPolicy,
  tier: string,
  subject: string,
  input: CheckInput,
  paths: readonly string[],
  now: number,
  override: readonly OverrideLimit[] | undefined,
): Plan {
  // An override's own limits are counted apart from the tier's.
  const tierLimits = override ? overrideLimits(override) : policy.tiers.get(tier)!.limits;
  const matching = tierLimits.filter(
    (l) => !l.match || paths.some((p) => l.match!.lookup(input.host, p, input.method).length > 0),
  );
  const { checks, limits } = limitChecks(policy, override ? 'override' : tier, subject, matching, now);
  let cost = 1;
  for (const c of policy.costs) {
    if (!c.match || paths.some((p) => c.match!.lookup(input.host, p, input.method).length > 0)) {
      cost = c.cost;
      break;
    }
  }
  return { policy, subject, tier, cost, checks, limits };
}
