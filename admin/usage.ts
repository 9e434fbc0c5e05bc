import type { FastifyInstance } from 'fastify';
import type { QuotaPolicySpec } from '../common/resources/types.gen.js';
import {
  type CompiledLimit,
  type CompiledQuotaPolicy,
  compileQuotaPolicy,
} from '../sidecar/policy/quotaPolicy.js';
import { limitChecks, type OverrideLimit, overrideLimits } from '../sidecar/quota/keys.js';
import type { QuotaStore } from '../sidecar/quota/store.js';
import { subjectHash } from '../sidecar/quota/subject.js';
import type { Databases } from './db.js';
import { errorSchema } from './pages.js';
import type { AdminRedis } from './redis.js';
import type { Guard } from './server.js';

/**
 * Quota usage of one subject: hourly sums from the rollups every sidecar writes
 * (quota_usage_hourly, read from a replica when one answers), and, for one QuotaPolicy, what
 * is left right now of each limit, read from the counters the sidecars charge in Redis.
 *
 * The live part needs the policy's limits (read from the API server, as the sidecars do), the
 * counters' keys (sidecar/quota/keys.ts, which the sidecars charge) and the sidecars' store,
 * asked in its dry-run mode with cost 0: nothing is charged, and remaining is what the GCRA
 * script (sidecar/quota/gcra.lua) computes on Redis's clock.
 */

/** Where a QuotaPolicy's spec comes from (the API server); undefined when there is no such policy. */
export type QuotaPolicySource = (namespace: string, name: string) => Promise<QuotaPolicySpec | undefined>;

const HOUR_MS = 3_600_000;
const MAX_RANGE_MS = 93 * 24 * HOUR_MS;

interface UsageQuery {
  readonly subject?: string[];
  readonly subjectHash?: string;
  readonly policy?: string;
  readonly from?: string;
  readonly to?: string;
}

const sums = {
  requests: { type: 'number' },
  denied: { type: 'number' },
  cost: { type: 'number' },
} as const;

const liveLimitSchema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    requests: { type: 'integer' },
    windowMs: { type: 'integer' },
    calendar: { type: 'string' },
    remaining: { type: 'integer' },
    resetMs: {
      type: 'integer',
      description: 'Until the limit is whole again (rolling) or its period ends (calendar).',
    },
  },
} as const;

interface LiveLimit {
  name: string;
  requests: number;
  windowMs?: number;
  calendar?: string;
  remaining: number;
  resetMs: number;
}

interface OverrideRow {
  tier: string | null;
  limits: OverrideLimit[] | null;
}

export function usageRoutes(
  app: FastifyInstance,
  db: Databases,
  redis: AdminRedis,
  quotaPolicy: QuotaPolicySource | undefined,
  guard: Guard,
): void {
  app.get<{ Querystring: UsageQuery }>(
    '/v1/usage',
    {
      preHandler: guard({ resource: 'usage', verb: 'get' }),
      schema: {
        summary: 'Quota usage of one subject per hour, policy and tier, and what is left now',
        description:
          'Name the subject by its parts as the QuotaPolicy builds them (subject=User=corp:alice, repeated for several parts) or by subjectHash. from/to: the hours summed (default: the last 24 h; at most 93 days). With policy ("<namespace>/<name>") and a Redis configured, live gives each limit’s remaining quota now, per tier the subject used in the range (or its override); live is null otherwise, and liveUnavailable says why.',
        tags: ['quota'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            subject: {
              type: 'array',
              minItems: 1,
              maxItems: 8,
              items: { type: 'string', minLength: 1, maxLength: 512 },
            },
            subjectHash: { type: 'string', pattern: '^[A-Za-z0-9_-]{22}$' },
            policy: { type: 'string', pattern: '^[^/]+/[^/]+$', maxLength: 317 },
            from: { type: 'string', format: 'date-time' },
            to: { type: 'string', format: 'date-time' },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              subjectHash: { type: 'string' },
              from: { type: 'string' },
              to: { type: 'string' },
              hours: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: {
                    policy: { type: 'string' },
                    tier: { type: 'string' },
                    hour: { type: 'string' },
                    ...sums,
                  },
                },
              },
              totals: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: { policy: { type: 'string' }, tier: { type: 'string' }, ...sums },
                },
              },
              live: {
                type: ['object', 'null'],
                properties: {
                  policy: { type: 'string' },
                  tiers: {
                    type: 'array',
                    items: {
                      type: 'object',
                      properties: {
                        tier: {
                          type: 'string',
                          description: 'A tier of the policy, or "override" for an override’s own limits.',
                        },
                        limits: { type: 'array', items: liveLimitSchema },
                      },
                    },
                  },
                },
              },
              liveUnavailable: { type: ['string', 'null'] },
              servedBy: { type: 'string', enum: ['replica', 'primary'] },
            },
          },
          400: errorSchema,
        },
      },
    },
    async (req, reply) => {
      const q = req.query;
      if ((q.subject === undefined) === (q.subjectHash === undefined))
        return reply.code(400).send({
          error: 'BadRequest',
          message: 'name the subject by subject or by subjectHash (one of them)',
        });
      const hash = q.subjectHash ?? subjectHash(q.subject!);
      const to = q.to ? Date.parse(q.to) : Date.now();
      const from = q.from ? Date.parse(q.from) : to - 24 * HOUR_MS;
      if (from >= to || to - from > MAX_RANGE_MS)
        return reply
          .code(400)
          .send({ error: 'BadRequest', message: 'from must be before to, at most 93 days apart' });

      const params: unknown[] = [hash, new Date(from).toISOString(), new Date(to).toISOString()];
      const byPolicy = q.policy ? ` AND policy = $${params.push(q.policy)}` : '';
      const { value, servedBy } = await db.read(async (c) => {
        // An hour counts when it overlaps the range: rollups are hourly.
        const hours = await c.query<{
          policy: string;
          tier: string;
          hour: string;
          requests: number;
          denied: number;
          cost: number;
        }>(
          `SELECT policy, tier, to_json(hour)#>>'{}' AS hour, requests::float8 AS requests, denied::float8 AS denied,
                  cost::float8 AS cost
             FROM quota_usage_hourly
            WHERE subject_hash = $1 AND hour > $2::timestamptz - interval '1 hour' AND hour < $3${byPolicy}
            ORDER BY policy, tier, hour`,
          params,
        );
        const override = q.policy
          ? await c.query<OverrideRow>(
              `SELECT tier, limits FROM quota_overrides
                WHERE subject_hash = $1 AND policy = $2 AND (expires_at IS NULL OR expires_at > now())`,
              [hash, q.policy],
            )
          : undefined;
        return { hours: hours.rows, override: override?.rows[0] };
      });

      const totals = new Map<
        string,
        { policy: string; tier: string; requests: number; denied: number; cost: number }
      >();
      for (const h of value.hours) {
        const key = `${h.policy}\0${h.tier}`;
        const t = totals.get(key) ?? { policy: h.policy, tier: h.tier, requests: 0, denied: 0, cost: 0 };
        t.requests += h.requests;
        t.denied += h.denied;
        t.cost += h.cost;
        totals.set(key, t);
      }

      let live: { policy: string; tiers: { tier: string; limits: LiveLimit[] }[] } | null = null;
      let liveUnavailable: string | null = null;
      if (!q.policy) liveUnavailable = 'no policy named';
      else if (!redis.quota) liveUnavailable = 'this admin API has no Redis (NOX_QUOTA_STORE is memory)';
      else if (!quotaPolicy) liveUnavailable = 'this admin API cannot read QuotaPolicies';
      else {
        const [ns, name] = q.policy.split('/') as [string, string];
        const spec = await quotaPolicy(ns, name);
        if (!spec) liveUnavailable = `no QuotaPolicy ${q.policy}`;
        else {
          const policy = compileQuotaPolicy(`QuotaPolicy/${q.policy}`, spec);
          const seen = [...totals.values()].filter((t) => t.policy === q.policy).map((t) => t.tier);
          live = {
            policy: q.policy,
            tiers: await liveRemaining(redis.quota, policy, hash, seen, value.override),
          };
        }
      }
      return {
        subjectHash: hash,
        from: new Date(from).toISOString(),
        to: new Date(to).toISOString(),
        hours: value.hours,
        totals: [...totals.values()],
        live,
        liveUnavailable,
        servedBy,
      };
    },
  );
}

/**
 * The limits the sidecars charge for this subject, and what is left of each: the override's
 * own limits when it has some (the sidecars then charge nothing else), else each tier the
 * subject was seen in (the override's tier first), or the default tier when none was.
 */
async function liveRemaining(
  store: QuotaStore,
  policy: CompiledQuotaPolicy,
  hash: string,
  seenTiers: readonly string[],
  override: OverrideRow | undefined,
): Promise<{ tier: string; limits: LiveLimit[] }[]> {
  let sets: { tier: string; limits: readonly CompiledLimit[] }[];
  if (override?.limits) {
    sets = [{ tier: 'override', limits: overrideLimits(override.limits) }];
  } else {
    const tiers = new Set<string>();
    if (override?.tier && policy.tiers.has(override.tier)) tiers.add(override.tier);
    for (const t of seenTiers) if (policy.tiers.has(t)) tiers.add(t);
    if (tiers.size === 0) tiers.add(policy.defaultTier);
    sets = [...tiers].map((t) => ({ tier: t, limits: policy.tiers.get(t)!.limits }));
  }
  // Calendar periods on this process's clock (as each sidecar does), remaining on Redis's.
  const now = Date.now();
  return Promise.all(
    sets.map(async (s) => {
      const { checks } = limitChecks(policy, s.tier, hash, s.limits, now);
      if (checks.length === 0) return { tier: s.tier, limits: [] };
      const read = await store.take(checks, 0, now, true);
      return {
        tier: s.tier,
        limits: s.limits.map((l, i) => ({
          name: l.name,
          requests: l.requests,
          ...(l.windowMs !== undefined ? { windowMs: l.windowMs } : { calendar: l.calendar! }),
          remaining: read.limits[i]?.remaining ?? 0,
          resetMs: read.limits[i]?.resetMs ?? 0,
        })),
      };
    }),
  );
}
