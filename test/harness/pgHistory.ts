import { Socket } from 'node:net';
import pg from 'pg';
import { sleep } from './process.js';

/**
 * A history checker for a replicated PostgreSQL under faults, in the spirit of Jepsen's bank
 * and set checks, cut down to the two properties a failover promises:
 *
 * - no acknowledged commit is lost: writers insert unique rows through the -rw Service and
 *   remember each INSERT that returned; at the end every one of them must be on the primary;
 * - never two writable primaries: a sampler writes to every instance's own address, and no
 *   two instances may have acknowledged writes in overlapping intervals (a write's interval
 *   runs from sending it to its acknowledgement; with one clock for all, two primaries
 *   acknowledging at once would show as overlapping intervals of two instances).
 *
 * Every connection is bound to a source address of the test's choosing, so a fault that cuts
 * another address (the operator's) off from an instance leaves the checker's view intact.
 */

/** A pg `stream` factory: TCP connections from `localAddress`. */
export function boundStream(localAddress: string): () => Socket {
  return () => {
    const socket = new Socket();
    const connect = socket.connect.bind(socket) as (opts: object) => Socket;
    (socket as unknown as { connect: (port: number, host: string) => Socket }).connect = (port, host) =>
      connect({ port, host, localAddress });
    return socket;
  };
}

export interface ConnectTo {
  readonly host: string;
  readonly user: string;
  readonly password: string;
  readonly database: string;
  /** The source address of the connection (default: the kernel's choice). */
  readonly localAddress?: string;
  readonly timeoutMs?: number;
}

export async function connectPg(to: ConnectTo): Promise<pg.Client> {
  const c = new pg.Client({
    host: to.host,
    port: 5432,
    user: to.user,
    password: to.password,
    database: to.database,
    ...(to.localAddress ? { stream: boundStream(to.localAddress) } : {}),
    connectionTimeoutMillis: to.timeoutMs ?? 1000,
    query_timeout: to.timeoutMs ?? 3000,
  } as pg.ClientConfig);
  c.on('error', () => {});
  await c.connect();
  return c;
}

export interface Writers {
  /** Sequence numbers whose INSERT returned, in order of acknowledgement. */
  readonly acked: number[];
  /** When each was acknowledged (ms since the epoch), same order. */
  readonly ackTimes: number[];
  /** The address of the server that acknowledged each (inet_server_addr()), same order. */
  readonly servers: string[];
  stop(): Promise<void>;
}

/**
 * `count` writers inserting (run, seq) rows into `table` through `to` as fast as they can,
 * reconnecting (after 50 ms, as a client backing off) on any error.
 */
export function startWriters(to: () => Promise<ConnectTo>, table: string, run: number, count = 4): Writers {
  const acked: number[] = [];
  const ackTimes: number[] = [];
  const servers: string[] = [];
  let stop = false;
  const writer = async (w: number) => {
    let c: pg.Client | undefined;
    let seq = w * 1_000_000;
    while (!stop) {
      try {
        c ??= await connectPg(await to());
        const n = ++seq;
        const r = await c.query(
          `INSERT INTO ${table} (run, seq) VALUES ($1, $2) RETURNING host(inet_server_addr()) AS server`,
          [run, n],
        );
        acked.push(n);
        ackTimes.push(Date.now());
        servers.push((r.rows[0] as { server: string }).server);
      } catch {
        const dead = c;
        c = undefined;
        void dead?.end().catch(() => {});
        await sleep(50); // a client backing off
      }
    }
    await c?.end().catch(() => {});
  };
  const done = Promise.all(Array.from({ length: count }, (_, w) => writer(w)));
  return {
    acked,
    ackTimes,
    servers,
    stop: async () => {
      stop = true;
      await done;
    },
  };
}

export interface SampledWrite {
  readonly instance: string;
  readonly seq: number;
  readonly sentAt: number;
  readonly ackedAt: number;
}

export interface Sampler {
  /** The writes some instance acknowledged. */
  readonly accepted: SampledWrite[];
  /** Attempts per instance (acknowledged or not). */
  readonly attempts: Map<string, number>;
  stop(): Promise<void>;
}

/**
 * Every `periodMs`, one INSERT into `table` (run, instance, seq) on each instance's own address, on
 * a fresh connection: an instance that is a replica refuses it, one that cannot reach its
 * synchronous standbys never acknowledges it (the attempt times out).
 */
export function startSampler(
  instances: () => Promise<{ pod: string; ip: string }[]>,
  to: Omit<ConnectTo, 'host'>,
  table: string,
  run: number,
  periodMs = 100,
): Sampler {
  const accepted: SampledWrite[] = [];
  const attempts = new Map<string, number>();
  let stop = false;
  let seq = 0;
  const one = async (pod: string, ip: string) => {
    const n = ++seq;
    attempts.set(pod, (attempts.get(pod) ?? 0) + 1);
    const sentAt = Date.now();
    let c: pg.Client | undefined;
    try {
      c = await connectPg({ ...to, host: ip, timeoutMs: to.timeoutMs ?? 1500 });
      await c.query(`INSERT INTO ${table} (run, instance, seq) VALUES ($1, $2, $3)`, [run, pod, n]);
      accepted.push({ instance: pod, seq: n, sentAt, ackedAt: Date.now() });
    } catch {
      /* not accepted */
    } finally {
      void c?.end().catch(() => {});
    }
  };
  const done = (async () => {
    // One attempt per instance at a time: an instance that cannot reach its synchronous
    // standbys keeps every backend whose commit waits (a client giving up does not end it),
    // and piling them up would only run it out of connections.
    const inFlight = new Map<string, Promise<void>>();
    while (!stop) {
      const started = Date.now();
      for (const { pod, ip } of await instances().catch(() => [])) {
        if (inFlight.has(pod)) continue;
        inFlight.set(
          pod,
          one(pod, ip).finally(() => inFlight.delete(pod)),
        );
      }
      await sleep(Math.max(periodMs - (Date.now() - started), 0)); // the sampling period
    }
    await Promise.all(inFlight.values());
  })();
  return {
    accepted,
    attempts,
    stop: async () => {
      stop = true;
      await done;
    },
  };
}

/** Pairs of writes two different instances acknowledged in overlapping intervals. */
export function overlappingAcceptance(writes: readonly SampledWrite[]): [SampledWrite, SampledWrite][] {
  const sorted = [...writes].sort((a, b) => a.sentAt - b.sentAt);
  const out: [SampledWrite, SampledWrite][] = [];
  for (let i = 0; i < sorted.length; i++)
    for (let j = i + 1; j < sorted.length && sorted[j]!.sentAt <= sorted[i]!.ackedAt; j++)
      if (sorted[j]!.instance !== sorted[i]!.instance) out.push([sorted[i]!, sorted[j]!]);
  return out;
}

/** The longest time without an acknowledgement between `from` and `to` (ms). */
export function longestGap(ackTimes: readonly number[], from: number, to: number): number {
  let last = from;
  let worst = 0;
  for (const t of [...ackTimes].sort((a, b) => a - b)) {
    if (t < from) continue;
    if (t > to) break;
    worst = Math.max(worst, t - last);
    last = t;
  }
  return Math.max(worst, to - last);
}
