import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { connectRedis, type RedisClient } from '../redis/connect.js';

/**
 * Revoked credentials, known to every sidecar within about a second: the list lives in one
 * Redis sorted set (score: until when the entry matters, e.g. the token's exp), changes are
 * announced on a pub/sub channel, and each sidecar answers from its own copy — checking a
 * revocation costs no round trip. Ids: "token:<sha256>", "subject:<provider>:<sub>",
 * "session:<sha256>", and "block:<subject tag>" (a RiskModel's block, stages/risk.ts).
 */
export interface Revocations {
  isRevoked(id: string, now: number): boolean;
  revoke(id: string, untilMs: number): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

const key = '{nox:revoked}';
const channel = 'nox:revocations';

export class RedisRevocations implements Revocations {
  readonly #local = new Map<string, number>();
  readonly #client: RedisClient;
  #subscriber: RedisClient | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #revoked: Counter;
  readonly #size: Gauge;

  constructor(
    nodes: readonly { host: string; port: number }[],
    cluster: boolean,
    password: string | undefined,
    private readonly log: Logger,
    registry: Registry,
    private readonly resyncMs = 30_000,
  ) {
    this.#client = connectRedis(
      { nodes, cluster, ...(password ? { password } : {}) },
      { maxRetriesPerRequest: 1 },
    );
    this.#client.on('error', (e: Error) => log.warn({ err: e.message }, 'revocations: redis error'));
    this.#revoked = new Counter({
      name: 'nox_identity_revocations_total',
      help: 'Revocations announced by this process.',
      registers: [registry],
    });
    this.#size = new Gauge({
      name: 'nox_identity_revoked_entries',
      help: 'Revoked credentials this sidecar knows about (not yet expired).',
      registers: [registry],
      collect: () => this.#size.set(this.#local.size),
    });
  }

  isRevoked(id: string, now: number): boolean {
    const until = this.#local.get(id);
    return until !== undefined && until > now;
  }

  async revoke(id: string, untilMs: number): Promise<void> {
    await this.#client.zadd(key, untilMs, id);
    await this.#client.publish(channel, JSON.stringify({ id, until: untilMs }));
    this.#local.set(id, untilMs);
    this.#revoked.inc();
  }

  /** The entries in force in Redis (not this process's copy), soonest to lapse first; at most `limit`. */
  async entries(now: number, limit: number): Promise<{ id: string; until: number }[]> {
    const flat = await this.#client.zrangebyscore(key, now, '+inf', 'WITHSCORES', 'LIMIT', 0, limit);
    const out: { id: string; until: number }[] = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i]!, until: Number(flat[i + 1]) });
    return out;
  }

  /**
   * Ends a revocation before its time (an administrator lifting a block or a revocation):
   * every sidecar drops it within about a second. False when there was none in force.
   */
  async lift(id: string): Promise<boolean> {
    const removed = await this.#client.zrem(key, id);
    await this.#client.publish(channel, JSON.stringify({ id, until: 0 }));
    this.#local.delete(id);
    return removed > 0;
  }

  /** Until when `id` is revoked according to Redis; undefined when it is not (or no longer). */
  async until(id: string, now: number): Promise<number | undefined> {
    const score = await this.#client.zscore(key, id);
    return score === null || Number(score) <= now ? undefined : Number(score);
  }

  async start(): Promise<void> {
    const sub = this.#client.duplicate();
    this.#subscriber = sub;
    sub.on('error', (e: Error) => this.log.warn({ err: e.message }, 'revocations: subscriber error'));
    sub.on('message', (_ch: string, msg: string) => {
      try {
        const { id, until } = JSON.parse(msg) as { id: string; until: number };
        if (until > 0) this.#local.set(id, until);
        else this.#local.delete(id); // lifted
      } catch {
        this.log.warn('revocations: malformed message ignored');
      }
    });
    // A message missed while reconnecting is caught by re-reading the set.
    sub.on('ready', () => void this.#resync());
    await sub.subscribe(channel);
    await this.#resync();
    this.#timer = setInterval(() => void this.#resync(), this.resyncMs);
    this.#timer.unref();
  }

  async #resync(): Promise<void> {
    try {
      const now = Date.now();
      await this.#client.zremrangebyscore(key, '-inf', now);
      const flat = await this.#client.zrangebyscore(key, now, '+inf', 'WITHSCORES');
      // Redis is the list: what it no longer holds (lapsed, or lifted while this sidecar
      // missed the message) goes; an entry added since the read is announced again.
      const inRedis = new Set<string>();
      for (let i = 0; i < flat.length; i += 2) {
        inRedis.add(flat[i]!);
        this.#local.set(flat[i]!, Number(flat[i + 1]));
      }
      for (const [id, until] of this.#local) if (until <= now || !inRedis.has(id)) this.#local.delete(id);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'revocations: resync failed; keeping the known list');
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#subscriber?.disconnect();
    this.#client.disconnect();
  }
}
