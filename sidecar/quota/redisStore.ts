import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import calculateSlot from 'cluster-key-slot';
import { Cluster } from 'ioredis';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { connectRedis, type RedisClient, type RedisTarget } from '../redis/connect.js';
import {
  observationArgs,
  observationKeys,
  parseFeatures,
  type SubjectObservation,
} from '../risk/subjectFeatures.js';
import { CircuitBreaker, CircuitOpenError } from './circuitBreaker.js';
import type { LimitCheck, LimitState, QuotaResult, QuotaStore } from './store.js';

const script = readFileSync(new URL('./gcra.lua', import.meta.url), 'utf8');
const scriptSha = createHash('sha1').update(script).digest('hex');
const failuresScript = readFileSync(new URL('./failures.lua', import.meta.url), 'utf8');
const failuresSha = createHash('sha1').update(failuresScript).digest('hex');

export interface RedisStoreOptions extends RedisTarget {
  /** A command (script + WAIT) not answered within this fails, and failureMode decides. */
  readonly timeoutMs: number;
  /**
   * Replicas that must have a charge before the check is admitted (WAIT). With 1, a
   * master that dies right after admitting cannot take the charge with it, so a failover
   * never re-admits what was already used. A shard whose replicas are all gone admits on
   * its master alone (there is nothing to fail over to) and counts it as degraded.
   */
  readonly waitReplicas: number;
  /**
   * How long WAIT may take (default 20 ms, at most half of timeoutMs); a replica slower than
   * this fails the check (failureMode).
   */
  readonly waitTimeoutMs?: number;
  readonly log: Logger;
  readonly registry: Registry;
}

type Client = RedisClient;

/**
 * The quota store on Redis or Redis Cluster: one EVALSHA (plus WAIT, pipelined to the same
 * node) per check — one round trip. A circuit breaker per node (the master that owns the
 * subject's slot) stops a dead shard from adding its timeout to every request for the
 * subjects it holds, while subjects on the other shards are counted as usual.
 */
export class RedisQuotaStore implements QuotaStore {
  readonly name: string;
  readonly #client: Client;
  /** One breaker per master, by "host:port" (the node's address; never a credential). */
  readonly #breakers = new Map<string, CircuitBreaker>();
  readonly #errors: Counter<'kind' | 'node'>;
  readonly #opened: Counter<'node'>;
  readonly #roundTrips: Counter;
  readonly #seconds: Histogram;
  readonly #up: Gauge<'node'>;
  readonly #degraded: Counter;

  constructor(private readonly opts: RedisStoreOptions) {
    this.name = opts.cluster ? 'redis-cluster' : 'redis';
    this.#client = connectRedis(
      opts,
      {
        commandTimeout: opts.timeoutMs,
        // Fail fast while disconnected: the failure mode decides, nothing queues up.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
      },
      {
        enableOfflineQueue: false,
        slotsRefreshTimeout: 1000,
        slotsRefreshInterval: 2000,
        retryDelayOnFailover: 50,
        retryDelayOnClusterDown: 50,
        maxRedirections: 4,
      },
    );
    this.#client.on('error', (err: Error) =>
      opts.log.warn({ err: err.message, store: this.name }, 'redis connection error'),
    );
    const r = opts.registry;
    this.#errors = new Counter({
      name: 'nox_quota_redis_errors_total',
      help: 'Failed quota store calls by kind (timeout, connection, circuit_open, not_replicated, other) and node: the master owning the subject’s slot, host:port.',
      labelNames: ['kind', 'node'],
      registers: [r],
    });
    this.#opened = new Counter({
      name: 'nox_quota_redis_circuit_opened_total',
      help: 'Times the circuit to a Redis node (host:port) opened after consecutive failures: its subjects are decided by failureMode for a second, without a call.',
      labelNames: ['node'],
      registers: [r],
    });
    this.#roundTrips = new Counter({
      name: 'nox_quota_redis_round_trips_total',
      help: 'Redis round trips made for quota checks.',
      registers: [r],
    });
    this.#seconds = new Histogram({
      name: 'nox_quota_redis_seconds',
      help: 'Latency of the quota round trip to Redis (script + WAIT).',
      buckets: [0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05],
      registers: [r],
    });
    this.#degraded = new Counter({
      name: 'nox_quota_redis_unreplicated_admits_total',
      help: 'Checks admitted while the subject’s master had fewer in-sync replicas than NOX_REDIS_WAIT_REPLICAS.',
      registers: [r],
    });
    this.#up = new Gauge({
      name: 'nox_quota_redis_circuit_closed',
      help: 'Per Redis node (host:port of a master that owns slots): 1 while its circuit is closed (calls go through), 0 while it is open.',
      labelNames: ['node'],
      registers: [r],
      collect: () => this.#collectCircuits(),
    });
  }

  /** The master that owns `slot` as the client last learnt it; for one Redis, that Redis. */
  #nodeFor(slot: number): string {
    const c = this.#client;
    if (c instanceof Cluster) return c.slots[slot]?.[0] ?? 'unknown';
    const n = this.opts.nodes[0];
    return n ? `${n.host}:${n.port}` : 'unknown';
  }

  #breakerFor(node: string): CircuitBreaker {
    let b = this.#breakers.get(node);
    if (!b) {
      b = new CircuitBreaker({ failureThreshold: 5, openMs: 1000, onOpen: () => this.#opened.inc({ node }) });
      this.#breakers.set(node, b);
    }
    return b;
  }

  /** Circuit states of the nodes that own slots now; a node that owns none any more is forgotten once closed. */
  #collectCircuits(): void {
    const c = this.#client;
    const owners = new Set<string>();
    if (c instanceof Cluster) for (const s of c.slots) if (s?.[0]) owners.add(s[0]);
    this.#up.reset();
    for (const [node, b] of this.#breakers) {
      if (c instanceof Cluster && !owners.has(node) && b.state === 'closed') {
        this.#breakers.delete(node);
        continue;
      }
      this.#up.set({ node }, b.state === 'open' ? 0 : 1);
    }
    for (const node of owners) if (!this.#breakers.has(node)) this.#up.set({ node }, 1);
  }

  /** Resolves once connected (startup); the sidecar is ready only after this. */
  async ready(timeoutMs = 10_000): Promise<void> {
    if (this.#client.status === 'ready') return;
    await new Promise<void>((res, rej) => {
      const t = setTimeout(() => rej(new Error(`redis not ready after ${timeoutMs} ms`)), timeoutMs);
      this.#client.once('ready', () => {
        clearTimeout(t);
        res();
      });
    });
  }

  async take(
    limits: readonly LimitCheck[],
    cost: number,
    _now: number,
    dryRun: boolean,
    _signal?: AbortSignal,
    observe?: SubjectObservation,
  ): Promise<QuotaResult> {
    const observed = observe ? observationKeys(observe.tag) : [];
    const keys = [...limits.map((l) => l.key), ...observed];
    if (keys.length === 0) return { allowed: true, limits: [] };
    const args: (string | number)[] = [keys.length, ...keys, cost, dryRun ? '1' : '0', limits.length];
    for (const l of limits) {
      if (l.windowMs !== undefined) args.push('g', l.requests, l.windowMs);
      else args.push('c', l.requests, l.resetAt!);
    }
    if (observe) args.push(...observationArgs(observe));
    const started = performance.now();
    // Every key of a check shares the subject's hash tag: one slot, one master, one breaker.
    const slot = calculateSlot(keys[0]!);
    if (observe && limits.length > 0 && calculateSlot(observed[0]!) !== slot)
      throw new Error('the risk observation and the limits are of different subjects');
    const node = this.#nodeFor(slot);
    try {
      // Nothing charged (dry run, or an observation alone): nothing to WAIT for.
      const reply = await this.#breakerFor(node).run(() =>
        this.#call(args, dryRun || limits.length === 0, slot),
      );
      return parse(limits, reply, observe !== undefined);
    } catch (e) {
      this.#errors.inc({ kind: classify(e), node });
      this.#refreshTopologySoon();
      throw e;
    } finally {
      this.#seconds.observe((performance.now() - started) / 1000);
    }
  }

  /**
   * Slots whose master last reported no replica in sync. WAIT there would block for its whole
   * timeout (Redis checks blocked clients' timeouts about every 100 ms), so those checks skip
   * it — there is nothing to wait for — until the master reports a replica again.
   */
  readonly #unreplicatedSlots = new Set<number>();

  async #call(args: (string | number)[], dryRun: boolean, slot: number): Promise<number[]> {
    const wait = this.opts.waitReplicas > 0 && !dryRun && !this.#unreplicatedSlots.has(slot);
    const reply = await this.#callOnce(args, wait);
    if (this.opts.waitReplicas > 0 && reply[0] === 1 && !dryRun) {
      const inSync = Number(reply.at(-1));
      if (inSync === 0) this.#unreplicatedSlots.add(slot);
      else this.#unreplicatedSlots.delete(slot);
      if (!wait) this.#degraded.inc();
    }
    return reply;
  }

  async #callOnce(args: (string | number)[], wait: boolean): Promise<number[]> {
    try {
      return await this.#roundTrip(args, wait, 'evalsha');
    } catch (e) {
      const msg = e instanceof Error ? e.message : '';
      // A node that never ran the script (a new master after failover): send it whole once;
      // Redis caches it by sha from then on.
      if (msg.startsWith('NOSCRIPT')) return this.#roundTrip(args, wait, 'eval');
      // ioredis retries a redirected pipeline only when every command in it was redirected;
      // WAIT has no key and is never redirected, so redirections are handled here.
      if (msg.startsWith('MOVED') && this.#client instanceof Cluster) {
        const cluster = this.#client;
        await new Promise<void>((res) => cluster.refreshSlotsCache(() => res()));
        return this.#roundTrip(args, wait, 'eval');
      }
      if (msg.startsWith('ASK')) {
        // A slot in migration: the script alone follows ASK; durability cannot be confirmed.
        this.#roundTrips.inc();
        const reply = (await this.#client.eval(
          script,
          ...(args as [number, ...(string | number)[]]),
        )) as number[];
        if (reply[0] === 1) this.#degraded.inc();
        return reply;
      }
      throw e;
    }
  }

  /** The script, and WAIT behind it on the same connection: one round trip. */
  async #roundTrip(args: (string | number)[], wait: boolean, how: 'evalsha' | 'eval'): Promise<number[]> {
    this.#roundTrips.inc();
    const pipe = this.#client.pipeline();
    if (how === 'evalsha') pipe.evalsha(scriptSha, ...(args as [number, ...(string | number)[]]));
    else pipe.eval(script, ...(args as [number, ...(string | number)[]]));
    if (wait) {
      pipe.wait(
        this.opts.waitReplicas,
        Math.max(1, Math.min(this.opts.waitTimeoutMs ?? 20, Math.floor(this.opts.timeoutMs / 2))),
      );
    }
    const results = (await pipe.exec()) ?? [];
    const [scriptResult, waitResult] = results;
    if (!scriptResult || scriptResult[0]) throw scriptResult?.[0] ?? new Error('no reply');
    const reply = scriptResult[1] as number[];
    if (wait && reply[0] === 1) {
      if (!waitResult || waitResult[0]) throw waitResult?.[0] ?? new Error('no WAIT reply');
      const inSync = Number(reply.at(-1));
      const needed = Math.min(this.opts.waitReplicas, inSync);
      if ((waitResult[1] as number) < needed) throw new NotReplicatedError();
      if (inSync < this.opts.waitReplicas && inSync > 0) this.#degraded.inc();
    }
    return reply;
  }

  #lastRefresh = 0;

  /**
   * A master that died leaves ioredis talking to a dead address until something makes it
   * re-read the topology; a failed call is that something (at most every 250 ms).
   */
  #refreshTopologySoon(): void {
    const client = this.#client;
    if (!(client instanceof Cluster)) return;
    const now = Date.now();
    if (now - this.#lastRefresh < 250) return;
    this.#lastRefresh = now;
    client.refreshSlotsCache();
  }

  /** One script call per subject (their keys are in different slots), all sent at once. */
  async recordFailures(counts: ReadonlyMap<string, number>): Promise<void> {
    await Promise.all(
      [...counts].map(async ([tag, n]) => {
        const key = observationKeys(tag)[0]!;
        try {
          await this.#client.evalsha(failuresSha, 1, key, n);
        } catch (e) {
          if (!(e instanceof Error && e.message.startsWith('NOSCRIPT'))) throw e;
          await this.#client.eval(failuresScript, 1, key, n);
        }
      }),
    );
  }

  async close(): Promise<void> {
    this.#client.disconnect();
  }
}

export class NotReplicatedError extends Error {
  override readonly name = 'NotReplicatedError';
  constructor() {
    super('the charge did not reach a replica in time');
  }
}

function classify(e: unknown): string {
  if (e instanceof CircuitOpenError) return 'circuit_open';
  if (e instanceof NotReplicatedError) return 'not_replicated';
  const msg = e instanceof Error ? e.message : String(e);
  if (/timed out/i.test(msg)) return 'timeout';
  if (
    /ECONNREFUSED|Connection is closed|offline queue|ECONNRESET|CLUSTERDOWN|Stream isn't writeable|None of startup nodes/i.test(
      msg,
    )
  ) {
    return 'connection';
  }
  return 'other';
}

function parse(limits: readonly LimitCheck[], reply: number[], observed: boolean): QuotaResult {
  const states: LimitState[] = limits.map((l, i) => ({
    key: l.key,
    allowed: reply[1 + i * 4] === 1,
    remaining: Number(reply[2 + i * 4]),
    resetMs: Number(reply[3 + i * 4]),
    retryAfterMs: Number(reply[4 + i * 4]),
  }));
  // After the limits: the replicas in sync, then the features.
  const features = observed ? { features: parseFeatures(reply, 2 + limits.length * 4) } : {};
  return { allowed: reply[0] === 1, limits: states, ...features };
}
