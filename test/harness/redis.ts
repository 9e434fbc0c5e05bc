import { rmSync } from 'node:fs';
import { Redis } from 'ioredis';
import { freePort } from './ports.js';
import { type Service, scratchDir, start, waitUntil } from './process.js';
import { tool } from './tools.js';

export interface RedisOptions {
  /** AOF persistence with `appendfsync everysec` (default true). No RDB snapshots either way. */
  appendonly?: boolean;
  /** Sets `requirepass`; clients must AUTH with it. */
  password?: string;
  /** Data directory. Default: a fresh scratch dir, removed by stop(). A given dir is left alone. */
  dir?: string;
  /** Default: a free port. */
  port?: number;
  /** Further `--option value` arguments, e.g. the cluster settings redisCluster.ts adds. */
  extraArgs?: string[];
  /** Service / log name; default `redis-<port>`. */
  name?: string;
  /**
   * Loopback address to bind (default 127.0.0.1). Nodes on one port at different addresses
   * look like pods: what the operator's slot moves assume (one port, one IP per node).
   */
  host?: string;
}

export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** `redis://[:password@]127.0.0.1:<port>` */
  readonly url: string;
  readonly dir: string;
  readonly password: string | undefined;
  /** Is the process running (false after stop()/kill() until restart())? */
  running(): boolean;
  /** Graceful SIGTERM: Redis fsyncs the AOF before exiting. Also removes a scratch dir. */
  stop(): Promise<void>;
  /** SIGKILL: a crash. With `everysec` up to ~1 s of acknowledged writes may be lost. */
  kill(): Promise<void>;
  /** Stops gracefully if running, then starts again on the same port and dir (AOF data survives). */
  restart(): Promise<void>;
}

/** Starts one redis-server on loopback and waits until it answers and has loaded its data. */
export async function startRedis(opts: RedisOptions = {}): Promise<RedisServer> {
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? (await freePort());
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? scratchDir(`redis-${port}`);
  const args = [
    '--port',
    String(port),
    '--bind',
    host,
    // Bound to loopback only, so protected mode would only get in the way of a passwordless setup.
    '--protected-mode',
    'no',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    opts.appendonly === false ? 'no' : 'yes',
    '--appendfsync',
    'everysec',
    '--daemonize',
    'no',
    // Log to stdout, which process.ts captures in .run/logs/.
    '--logfile',
    '',
    ...(opts.password !== undefined ? ['--requirepass', opts.password] : []),
    ...(opts.extraArgs ?? []),
  ];
  const name = opts.name ?? `redis-${port}`;
  let svc: Service | undefined;
  let removed = false;

  const launch = async () => {
    const s = start(name, tool('redis-server'), args);
    svc = s;
    // The probe also fails fast if the server exits (e.g. its port was taken after all).
    await waitUntil(`${name} to load its data`, () => isLoaded(port, opts.password, host), 30_000, s).catch(
      async (e: unknown) => {
        await s.kill();
        throw e;
      },
    );
  };
  await launch();

  const password = opts.password;
  const auth = password !== undefined ? `:${encodeURIComponent(password)}@` : '';
  return {
    host,
    port,
    url: `redis://${auth}${host}:${port}`,
    dir,
    password,
    running: () => svc !== undefined && !svc.exited(),
    async stop() {
      if (svc) await gracefulStop(svc);
      if (ownDir && !removed) {
        removed = true;
        rmSync(dir, { recursive: true, force: true });
      }
    },
    async kill() {
      await svc?.kill();
    },
    async restart() {
      if (removed) throw new Error(`${name} was stopped for good; its data dir is gone`);
      if (svc) await gracefulStop(svc);
      await launch();
    },
  };
}

/**
 * SIGTERM, repeated: Redis ignores a shutdown request that arrives while it writes its
 * initial AOF (right after a replica's full sync: "Writing initial AOF, can't exit") and
 * does not retry it by itself. SIGKILL after 10 s as a last resort.
 */
async function gracefulStop(svc: Service): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!svc.exited() && Date.now() < deadline) {
    try {
      process.kill(svc.child.pid!, 'SIGTERM');
    } catch {
      break; // already gone
    }
    for (let i = 0; i < 10 && !svc.exited(); i++) await new Promise((r) => setTimeout(r, 50));
  }
  await svc.kill(); // no-op once it has exited; waits for the exit event otherwise
}

/**
 * A short-lived connection that fails fast instead of retrying: probes must report
 * "not yet", not hang in ioredis's reconnect loop.
 */
export function probeClient(port: number, password?: string, host = '127.0.0.1'): Redis {
  const c = new Redis({
    host,
    port,
    password,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 2_000,
    // Our own probes decide readiness; ioredis's INFO-based ready check would just wait.
    enableReadyCheck: false,
  });
  c.on('error', () => {
    /* surfaced through the failing command instead */
  });
  return c;
}

/** Runs `fn` on a fresh probe connection and always closes it. */
export async function withProbe<T>(
  port: number,
  password: string | undefined,
  fn: (c: Redis) => Promise<T>,
  host = '127.0.0.1',
) {
  const c = probeClient(port, password, host);
  try {
    await c.connect();
    return await fn(c);
  } finally {
    c.disconnect();
  }
}

/**
 * PING alone is not enough: while Redis replays a large AOF it accepts connections but
 * answers data commands with -LOADING. INFO works during loading and says when it is done.
 */
function isLoaded(port: number, password: string | undefined, host: string): Promise<boolean> {
  return withProbe(
    port,
    password,
    async (c) => {
      if ((await c.ping()) !== 'PONG') return false;
      return /^loading:0\r?$/m.test(await c.info('persistence'));
    },
    host,
  );
}
