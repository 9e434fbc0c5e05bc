import { execFile, execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg, { type QueryResultRow } from 'pg';
import { freePort } from './ports.js';
import { type Service, sharedScratchDir, start, waitUntil } from './process.js';
import { tool } from './tools.js';

const run = promisify(execFile);
const host = '127.0.0.1';
const superuser = 'postgres';
const database = 'postgres';
/**
 * The replica's cluster_name, which is also its walreceiver's application_name (what
 * pg_stat_replication and synchronous_standby_names go by) and its replication slot's name.
 * No hyphen: synchronous_standby_names would need it quoted.
 */
const replicaName = 'nox_replica';

/** The user the PostgreSQL programs run as; undefined: as ourselves. */
type RunAs = { uid: number; gid: number } | undefined;

export type SynchronousCommit = 'on' | 'off' | 'local' | 'remote_write' | 'remote_apply';

export interface PostgresOptions {
  /** `synchronous_commit` on the primary; default 'on' (cheap here, since fsync is off). */
  synchronousCommit?: SynchronousCommit;
  /**
   * Pair only: name the replica in `synchronous_standby_names`, so commits wait for it. With
   * `synchronousCommit: 'remote_apply'` a committed row is then immediately visible on the replica.
   */
  synchronousStandby?: boolean;
}

export interface PgNode {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly database: string;
  /** `postgresql://postgres@127.0.0.1:<port>/postgres` (trust auth: any password is accepted). */
  readonly connectionString: string;
  readonly dataDir: string;
  /** Holds the Unix socket, so `psql -h <socketDir> -p <port>` works too. */
  readonly socketDir: string;
  running(): boolean;
  /** Fast shutdown (SIGINT: abort sessions, checkpoint, exit). */
  stop(): Promise<void>;
  /** SIGKILL to the whole process group: a crash, recovered from on restart(). */
  kill(): Promise<void>;
  /** Stops if running, starts again on the same port and data dir, waits until it accepts queries. */
  restart(): Promise<void>;
}

export interface PostgresPair {
  readonly primary: PgNode;
  readonly replica: PgNode;
  /** Resolves once the replica has replayed all WAL the primary had written when this was called. */
  waitForReplay(timeoutMs?: number): Promise<void>;
  /** Stops both (replica first) and removes their data. */
  stop(): Promise<void>;
}

/**
 * PostgreSQL refuses to run as root. When we are root (CI containers), initdb, postgres and
 * pg_basebackup run as the `postgres` system user, which the Debian package creates; it is
 * created here with useradd if missing. As any other user, they simply run as that user.
 * Either way that user must reach the binaries and the data (every directory above them
 * searchable): tool() gives the binaries' real paths, and the data lives in a directory of
 * its own under the system's temporary directory (see sharedScratchDir), not in the checkout.
 */
function runAs(): RunAs {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync('id', [flag, superuser], { encoding: 'utf8' }).trim());
  try {
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    execFileSync('useradd', [
      '--system',
      '--user-group',
      '--no-create-home',
      '--shell',
      '/usr/sbin/nologin',
      superuser,
    ]);
    return { uid: id('-u'), gid: id('-g') };
  }
}

async function runTool(name: string, args: string[], user: RunAs, cwd: string) {
  try {
    await run(tool(name), args, {
      uid: user?.uid,
      gid: user?.gid,
      cwd,
      env: { ...process.env, LC_ALL: 'C' },
      timeout: 180_000,
    });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${name} failed: ${err.stderr?.trim() || err.message}`);
  }
}

/** Runs one statement on a fresh connection. */
export async function pgQuery<R extends QueryResultRow = QueryResultRow>(
  node: { host: string; port: number },
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  const c = new pg.Client({
    host: node.host,
    port: node.port,
    user: superuser,
    database,
    connectionTimeoutMillis: 3000,
  });
  // A connection killed by a server shutdown reports an async 'error'; without a listener it would crash the run.
  c.on('error', () => {});
  try {
    await c.connect();
    return (await c.query<R>(sql, params)).rows;
  } finally {
    await c.end().catch(() => {});
  }
}

interface Launch {
  name: string;
  clusterName: string;
  dir: string;
  user: RunAs;
  settings: Record<string, string>;
}

/** Starts `postgres` on an existing data dir and returns the node once `SELECT 1` works. */
async function launchNode(l: Launch): Promise<PgNode> {
  const port = await freePort();
  const dataDir = join(l.dir, 'data');
  const settings: Record<string, string> = {
    port: String(port),
    listen_addresses: host,
    unix_socket_directories: l.dir,
    cluster_name: l.clusterName,
    // Test data is disposable: trade durability for speed.
    fsync: 'off',
    full_page_writes: 'off',
    shared_buffers: '16MB',
    max_connections: '50',
    wal_level: 'replica',
    max_wal_senders: '5',
    max_replication_slots: '5',
    hot_standby: 'on',
    // As the operator configures its replicas (operator/postgres/desired.ts): a long read on
    // a replica (an audit export) is not cancelled for the rows the primary's vacuum removes.
    hot_standby_feedback: 'on',
    ...l.settings,
  };
  // Settings go on the command line, not into postgresql.conf, because pg_basebackup copies
  // the primary's config files and the replica needs its own port and socket dir.
  const args = ['-D', dataDir, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
  let svc: Service | undefined;
  let removed = false;
  const boot = async () => {
    // cwd: its own directory; the test's (the checkout) may be out of the postgres user's reach.
    const s = start(`${l.name}-${port}`, tool('postgres'), args, {
      cwd: l.dir,
      uid: l.user?.uid,
      gid: l.user?.gid,
    });
    svc = s;
    const ready = async () => (await pgQuery({ host, port }, 'SELECT 1')).length === 1;
    await waitUntil(`${l.name} to accept queries`, ready, 60_000, s).catch(async (e: unknown) => {
      await s.kill();
      throw e;
    });
  };
  const shutdown = async () => {
    if (svc === undefined || svc.exited()) return;
    const s = svc;
    // SIGINT to the postmaster alone is a fast shutdown. Service.stop() would SIGTERM the
    // whole process group instead, which is a "smart" shutdown for the postmaster (waits for
    // clients) while killing its auxiliary processes from under it.
    const gone = new Promise<void>((res) => s.child.once('exit', () => res()));
    process.kill(s.child.pid!, 'SIGINT');
    const timer = setTimeout(() => void s.kill(), 20_000);
    await gone;
    clearTimeout(timer);
  };
  await boot();
  return {
    host,
    port,
    user: superuser,
    database,
    connectionString: `postgresql://${superuser}@${host}:${port}/${database}`,
    dataDir,
    socketDir: l.dir,
    running: () => svc !== undefined && !svc.exited(),
    async stop() {
      await shutdown();
      if (!removed) {
        removed = true;
        rmSync(l.dir, { recursive: true, force: true });
      }
    },
    async kill() {
      await svc?.kill();
    },
    async restart() {
      if (removed) throw new Error(`${l.name} was stopped for good; its data dir is gone`);
      await shutdown();
      await boot();
    },
  };
}

function primarySettings(opts: PostgresOptions): Record<string, string> {
  return {
    synchronous_commit: opts.synchronousCommit ?? 'on',
    ...(opts.synchronousStandby ? { synchronous_standby_names: replicaName } : {}),
  };
}

/** A single PostgreSQL 15 server (no replica). Trust auth on loopback: tests need no password. */
export async function startPostgres(opts: Omit<PostgresOptions, 'synchronousStandby'> = {}): Promise<PgNode> {
  const user = runAs();
  const dir = sharedScratchDir('pg-primary', user);
  try {
    await initdb(dir, user);
    return await launchNode({
      name: 'postgres',
      clusterName: 'nox_primary',
      dir,
      user,
      settings: primarySettings(opts),
    });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/**
 * A primary and one hot-standby replica streaming from it through a physical replication
 * slot. Resolves once the replica is in recovery and the primary reports it `streaming`.
 */
export async function startPostgresPair(opts: PostgresOptions = {}): Promise<PostgresPair> {
  const user = runAs();
  const primaryDir = sharedScratchDir('pg-primary', user);
  let primary: PgNode | undefined;
  let replica: PgNode | undefined;
  const replicaDir = sharedScratchDir('pg-replica', user);
  try {
    await initdb(primaryDir, user);
    primary = await launchNode({
      name: 'postgres-primary',
      clusterName: 'nox_primary',
      dir: primaryDir,
      user,
      settings: primarySettings(opts),
    });
    // -R writes standby.signal and primary_conninfo/primary_slot_name; -C -S creates the
    // slot, so the primary keeps the WAL the replica has not received yet; --checkpoint=fast
    // avoids waiting for a spread checkpoint before the copy starts.
    await runTool(
      'pg_basebackup',
      [
        '-D',
        join(replicaDir, 'data'),
        '-d',
        `host=${host} port=${primary.port} user=${superuser}`,
        '-R',
        '-X',
        'stream',
        '-C',
        '-S',
        replicaName,
        '--checkpoint=fast',
        '--no-sync',
      ],
      user,
      replicaDir,
    );
    replica = await launchNode({
      name: 'postgres-replica',
      clusterName: replicaName,
      dir: replicaDir,
      user,
      // After losing the primary (a restart in a test) the replica retries every 5 s by
      // default; with a synchronous standby, commits would stall that long.
      settings: { wal_retrieve_retry_interval: '500ms' },
    });
    const p = primary;
    const r = replica;
    await waitUntil(
      'the postgres replica to stream from the primary',
      async () => {
        const [rec] = await pgQuery<{ r: boolean }>(r, 'SELECT pg_is_in_recovery() AS r');
        const rows = await pgQuery<{ state: string }>(
          p,
          'SELECT state FROM pg_stat_replication WHERE application_name = $1',
          [replicaName],
        );
        return rec?.r === true && rows[0]?.state === 'streaming';
      },
      60_000,
    );
    return {
      primary: p,
      replica: r,
      async waitForReplay(timeoutMs = 30_000) {
        const [cur] = await pgQuery<{ lsn: string }>(p, 'SELECT pg_current_wal_lsn()::text AS lsn');
        await waitUntil(
          `the replica to replay up to ${cur!.lsn}`,
          async () => {
            const [row] = await pgQuery<{ ok: boolean }>(
              r,
              'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok',
              [cur!.lsn],
            );
            return row?.ok === true;
          },
          timeoutMs,
        );
      },
      async stop() {
        // Replica first: a primary's fast shutdown waits for its walsenders to send the final WAL.
        await r.stop();
        await p.stop();
      },
    };
  } catch (e) {
    await replica?.stop();
    await primary?.stop();
    rmSync(replicaDir, { recursive: true, force: true });
    rmSync(primaryDir, { recursive: true, force: true });
    throw e;
  }
}

async function initdb(dir: string, user: RunAs): Promise<void> {
  // trust: loopback-only throwaway servers, and replication connections need no password.
  await runTool(
    'initdb',
    [
      '-D',
      join(dir, 'data'),
      '-U',
      superuser,
      '--auth=trust',
      '-E',
      'UTF8',
      '--locale=C',
      '--no-sync',
      '--no-instructions',
    ],
    user,
    dir,
  );
}
