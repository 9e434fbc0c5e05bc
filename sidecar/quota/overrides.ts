import type pg from 'pg';
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';

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

/**
 * Per-subject overrides (set through the admin API, stored in PostgreSQL) held in memory, so
 * the quota check never waits for the database. Every sidecar re-reads the table every
 * `intervalMs`; a failed read keeps the overrides it has.
 */
export class OverrideStore implements OverrideLookup {
  #byKey = new Map<string, Override>();
  #timer: NodeJS.Timeout | undefined;
  readonly #inForce: Gauge;

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
      const { rows } = await this.pool.query<{
        subject_hash: string;
        policy: string;
        tier: string | null;
        limits: LimitOverride[] | null;
        expires_at: Date | null;
      }>(
        'SELECT subject_hash, policy, tier, limits, expires_at FROM quota_overrides WHERE expires_at IS NULL OR expires_at > now()',
      );
      const next = new Map<string, Override>();
      for (const r of rows) {
        next.set(`${r.policy}\u0000${r.subject_hash}`, {
          ...(r.tier ? { tier: r.tier } : {}),
          ...(r.limits ? { limits: r.limits } : {}),
          ...(r.expires_at ? { expiresAt: r.expires_at.getTime() } : {}),
        });
      }
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

  stop(): void {
    clearInterval(this.#timer);
  }
}
