import type pg from 'pg';
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { CompileError, windowMs } from '../policy/quotaPolicy.js';

export interface LimitOverride {
  readonly name?: string;
  readonly requests: number;
  readonly window?: string;
  readonly calendar?: 'Day' | 'Week' | 'Month' | 'Year';
}

export interface Override {
  readonly tier?: string;
  readonly limits?: readonly LimitOverride[];
  /** ms since the epoch; undefined: no expiry. */
  readonly expiresAt?: number;
}

export interface OverrideLookup {
  get(subjectHash: string, policy: string, now: number): Override | undefined;
}

interface OverrideRow {
  subject_hash: unknown;
  policy: unknown;
  tier: unknown;
  limits: unknown;
  expires_at: Date | null;
}

const dnsLabel = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const calendars = new Set(['Day', 'Week', 'Month', 'Year']);
const limitFields = new Set(['name', 'requests', 'window', 'calendar']);

/**
 * A row as the sidecar will apply it, or why it is refused. The rules are the QuotaPolicy
 * limit's (CRD schema and compiler): `requests` an integer 1 … 1e9, exactly one of a window
 * the compiler accepts or a calendar period, a DNS-label name unique in the row, 1 … 8
 * limits, no other field. A row is applied whole or not at all: a refused row leaves its
 * subject on the policy's own tiers, never without a limit (a negative, zero, fractional or
 * missing `requests`, or an empty list, would otherwise count as unlimited).
 */
export function validateOverride(row: OverrideRow): { override: Override } | { refused: string } {
  if (typeof row.subject_hash !== 'string' || !/^[A-Za-z0-9_-]{22}$/.test(row.subject_hash)) {
    return { refused: 'subject_hash is not a subject hash' };
  }
  if (typeof row.policy !== 'string' || !/^[^/]+\/[^/]+$/.test(row.policy)) {
    return { refused: 'policy is not "<namespace>/<name>"' };
  }
  if (
    row.tier !== null &&
    (typeof row.tier !== 'string' || row.tier.length > 63 || !dnsLabel.test(row.tier))
  ) {
    return { refused: 'tier is not a tier name' };
  }
  if (row.tier === null && row.limits === null) return { refused: 'neither tier nor limits is set' };
  let limits: LimitOverride[] | undefined;
  if (row.limits !== null) {
    if (!Array.isArray(row.limits) || row.limits.length === 0 || row.limits.length > 8) {
      return { refused: 'limits is not a list of 1 to 8 limits' };
    }
    limits = [];
    const names = new Set<string>();
    for (const [i, l] of (row.limits as unknown[]).entries()) {
      const at = `limits[${i}]`;
      if (typeof l !== 'object' || l === null || Array.isArray(l))
        return { refused: `${at} is not an object` };
      const o = l as Record<string, unknown>;
      const unknown = Object.keys(o).find((k) => !limitFields.has(k));
      if (unknown !== undefined) return { refused: `${at}.${unknown} is not a limit field` };
      const { requests, window, calendar, name } = o;
      if (typeof requests !== 'number' || !Number.isInteger(requests) || requests < 1 || requests > 1e9) {
        return { refused: `${at}.requests must be an integer from 1 to 1000000000` };
      }
      if ((window === undefined) === (calendar === undefined)) {
        return { refused: `${at} must have exactly one of window or calendar` };
      }
      if (window !== undefined) {
        try {
          if (typeof window !== 'string') throw new CompileError(`${at}.window`, 'is not a string');
          windowMs(window, `${at}.window`);
        } catch (e) {
          return { refused: e instanceof Error ? e.message : String(e) };
        }
      }
      if (calendar !== undefined && (typeof calendar !== 'string' || !calendars.has(calendar))) {
        return { refused: `${at}.calendar must be Day, Week, Month or Year` };
      }
      if (name !== undefined && (typeof name !== 'string' || name.length > 63 || !dnsLabel.test(name))) {
        return { refused: `${at}.name is not a DNS label` };
      }
      const effective = (name ?? window ?? (calendar as string).toLowerCase()) as string;
      if (names.has(effective)) return { refused: `${at}: two limits are both named "${effective}"` };
      names.add(effective);
      limits.push({
        requests,
        ...(name !== undefined ? { name: name as string } : {}),
        ...(window !== undefined ? { window: window as string } : {}),
        ...(calendar !== undefined ? { calendar: calendar as LimitOverride['calendar'] } : {}),
      });
    }
  }
  return {
    override: Object.freeze({
      ...(row.tier !== null ? { tier: row.tier as string } : {}),
      ...(limits ? { limits: Object.freeze(limits) } : {}),
      ...(row.expires_at ? { expiresAt: row.expires_at.getTime() } : {}),
    }),
  };
}

/**
 * Per-subject overrides (set through the admin API, stored in PostgreSQL) held in memory, so
 * the quota check never waits for the database. Every sidecar re-reads the table every
 * `intervalMs`; a failed read keeps the overrides it has. Rows that break the limit rules
 * (validateOverride) are refused: not applied, counted in nox_quota_overrides_refused and
 * logged once each.
 */
export class OverrideStore implements OverrideLookup {
  #byKey = new Map<string, Override>();
  #timer: NodeJS.Timeout | undefined;
  readonly #inForce: Gauge;
  readonly #refused: Gauge;
  /** Rows refused by the last load, so that each is logged once, not every refresh. */
  #refusedKeys = new Set<string>();
  #listener: pg.Client | undefined;
  #stopped = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    registry: Registry,
    private readonly intervalMs = 5000,
  ) {
    this.#inForce = new Gauge({
      name: 'nox_quota_overrides_in_force',
      help: 'Per-subject quota overrides currently loaded (not expired).',
      registers: [registry],
      collect: () => {
        const now = Date.now();
        let n = 0;
        for (const o of this.#byKey.values()) if (o.expiresAt === undefined || o.expiresAt > now) n++;
        this.#inForce.set(n);
      },
    });
    this.#refused = new Gauge({
      name: 'nox_quota_overrides_refused',
      help: 'Override rows the last load refused (negative, zero or fractional requests, bad window, empty limits, ...): not applied, their subjects keep the policy’s tiers.',
      registers: [registry],
    });
  }

  get(subjectHash: string, policy: string, now: number): Override | undefined {
    const o = this.#byKey.get(`${policy}\u0000${subjectHash}`);
    if (!o || (o.expiresAt !== undefined && o.expiresAt <= now)) return undefined;
    return o;
  }

  async start(): Promise<void> {
    await this.refresh().catch(() => undefined);
    this.#timer = setInterval(() => void this.refresh().catch(() => undefined), this.intervalMs);
    this.#timer.unref();
  }

  async refresh(): Promise<number> {
    try {
      const { rows } = await this.pool.query<OverrideRow & { updated_at: Date | null }>(
        'SELECT subject_hash, policy, tier, limits, expires_at, updated_at FROM quota_overrides WHERE expires_at IS NULL OR expires_at > now()',
      );
      const next = new Map<string, Override>();
      const refused = new Set<string>();
      for (const r of rows) {
        const v = validateOverride(r);
        if ('refused' in v) {
          const id = `${String(r.policy)}\u0000${String(r.subject_hash)}\u0000${r.updated_at?.getTime() ?? ''}`;
          refused.add(id);
          if (!this.#refusedKeys.has(id)) {
            this.log.warn(
              { policy: String(r.policy), subjectHash: String(r.subject_hash), reason: v.refused },
              'quota override refused: not applied, the subject keeps the policy’s tiers',
            );
          }
          continue;
        }
        next.set(`${r.policy}\u0000${r.subject_hash}`, v.override);
      }
      this.#refusedKeys = refused;
      this.#refused.set(refused.size);
      this.#byKey = next;
      return next.size;
    } catch (e) {
      this.log.warn(
        { err: (e as Error).message, kept: this.#byKey.size },
        'quota overrides could not be read; keeping the ones loaded',
      );
      throw e;
    }
  }

  /**
   * Also re-reads the table as soon as the admin API changes it: a connection of its own
   * LISTENs on OVERRIDES_CHANNEL (the admin API notifies in the transaction that writes, so
   * the notice comes at commit). A lost connection is made again after a second, followed by
   * a read (notices sent meanwhile are gone); the periodic read stays as the backstop.
   */
  listen(config: pg.ClientConfig, connect: (c: pg.ClientConfig) => pg.Client): void {
    let refreshing: Promise<unknown> | undefined;
    let again = false;
    const refreshSoon = () => {
      if (refreshing) {
        again = true;
        return;
      }
      refreshing = this.refresh()
        .catch(() => undefined)
        .finally(() => {
          refreshing = undefined;
          if (again) {
            again = false;
            refreshSoon();
          }
        });
    };
    const open = () => {
      if (this.#stopped) return;
      const client = connect(config);
      this.#listener = client;
      let retried = false;
      const retry = (why: string) => {
        if (retried || this.#stopped) return;
        retried = true;
        this.log.warn({ err: why }, 'quota override notices: connection lost; listening again in 1 s');
        void client.end().catch(() => {});
        setTimeout(open, 1000).unref();
      };
      client.on('error', (e) => retry(e.message));
      client.on('end', () => retry('connection ended'));
      client.on('notification', () => refreshSoon());
      client
        .connect()
        .then(() => client.query(`LISTEN ${OVERRIDES_CHANNEL}`))
        .then(refreshSoon, (e: Error) => retry(e.message));
    };
    open();
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    void this.#listener?.end().catch(() => {});
  }
}

/** The PostgreSQL notification channel the admin API signals override changes on. */
export const OVERRIDES_CHANNEL = 'nox_quota_overrides';
