import pg from 'pg';
import { CONFIG_VERSION_SETTING } from './desired.js';
import { POSTGRES_PORT, SUPERUSER } from './instanceManager.js';

/**
 * What the operator learns from one PostgreSQL instance over SQL, and the few commands it
 * sends: promotion and replication slots. Every call has a short connect and statement
 * timeout: an instance that does not answer is "unreachable", never a hung reconcile.
 */

export interface InstanceObservation {
  readonly reachable: boolean;
  /** Why not, when unreachable. */
  readonly error?: string;
  /**
   * Unreachable because the connection was refused: nothing listens on the instance's address,
   * so its PostgreSQL is not running. A timeout proves nothing (a partition, a frozen process).
   */
  readonly refused?: boolean;
  readonly inRecovery?: boolean;
  /** Primary: pg_current_wal_lsn(). */
  readonly currentLsn?: string;
  /** Replica: pg_last_wal_receive_lsn() / pg_last_wal_replay_lsn(). */
  readonly receivedLsn?: string;
  readonly replayedLsn?: string;
  readonly timeline?: number;
  /** Replica: the WAL receiver's state ("streaming", ...), absent when it is not running. */
  readonly walReceiver?: string;
  /** Primary: the standbys connected to it, by application_name (the pod name). */
  readonly standbys?: readonly { name: string; state: string; syncState: string; flushLsn?: string }[];
  readonly slots?: readonly string[];
  /** Some setting changed that applies only after a restart (pg_settings.pending_restart). */
  readonly pendingRestart?: boolean;
  /** The nox.config_version of the postgresql.conf it last read (desired.ts). */
  readonly configVersion?: string;
  /** Primary: synchronous_standby_names in force (what it waits for before acknowledging a commit). */
  readonly syncStandbyNames?: string;
  /** Replica: primary_conninfo in force; '' when detached from any primary. */
  readonly primaryConninfo?: string;
  /**
   * Primary: where each earlier timeline of its history ended (its .history file): a replica
   * on one of them that holds WAL past that point has diverged and cannot follow.
   */
  readonly forks?: readonly TimelineFork[];
}

export interface TimelineFork {
  readonly timeline: number;
  readonly endLsn: string;
}

/** A timeline history file's lines: "<parent timeline>\t<switchpoint>\t<reason>". */
export function parseTimelineHistory(text: string): TimelineFork[] {
  return text
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter(([tli, lsn]) => tli && /^\d+$/.test(tli) && lsn && /^[0-9A-F]+\/[0-9A-F]+$/i.test(lsn))
    .map(([tli, lsn]) => ({ timeline: Number(tli), endLsn: lsn! }));
}

export interface InstanceAccess {
  readonly password: string;
  readonly port?: number;
  readonly connectTimeoutMs?: number;
  readonly statementTimeoutMs?: number;
}

async function withClient<T>(
  ip: string,
  access: InstanceAccess,
  fn: (c: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client({
    host: ip,
    port: access.port ?? POSTGRES_PORT,
    user: SUPERUSER,
    password: access.password,
    database: 'postgres',
    application_name: 'nox-operator',
    connectionTimeoutMillis: access.connectTimeoutMs ?? 1000,
    query_timeout: access.statementTimeoutMs ?? 3000,
  });
  client.on('error', () => {}); // a dropped connection surfaces through the pending query
  try {
    await client.connect();
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * A replica's timeline when its WAL receiver is not running (detached, or between retries):
 * the newest timeline it holds WAL segments of (a segment's name starts with its timeline).
 * A replica stranded on an old timeline has none of the newer one; a .history file alone
 * (fetched while trying to follow) does not count.
 */
const walTimelineSql = `SELECT ('x' || max(substr(name, 1, 8)))::bit(32)::int FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'`;

const positionsSql = `
SELECT pg_is_in_recovery() AS recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current,
       pg_last_wal_receive_lsn()::text AS received,
       pg_last_wal_replay_lsn()::text AS replayed,
       CASE WHEN pg_is_in_recovery()
            THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), (${walTimelineSql}))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver,
       EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart) AS pending,
       current_setting('${CONFIG_VERSION_SETTING}', true) AS config_version,
       current_setting('synchronous_standby_names') AS sync_names,
       current_setting('primary_conninfo') AS conninfo`;

export async function observeInstance(ip: string, access: InstanceAccess): Promise<InstanceObservation> {
  try {
    return await withClient(ip, access, async (c) => {
      const row = (await c.query(positionsSql)).rows[0] as {
        recovery: boolean;
        current: string | null;
        received: string | null;
        replayed: string | null;
        timeline: number | null;
        receiver: string | null;
        pending: boolean;
        config_version: string | null;
        sync_names: string;
        conninfo: string;
      };
      let standbys: InstanceObservation['standbys'];
      let slots: string[] | undefined;
      let forks: TimelineFork[] | undefined;
      if (!row.recovery) {
        const rep = await c.query(
          'SELECT application_name, state, sync_state, flush_lsn::text AS flush FROM pg_stat_replication',
        );
        standbys = rep.rows.map(
          (r: { application_name: string; state: string; sync_state: string; flush: string | null }) => ({
            name: r.application_name,
            state: r.state,
            syncState: r.sync_state,
            ...(r.flush ? { flushLsn: r.flush } : {}),
          }),
        );
        slots = (
          await c.query("SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical'")
        ).rows.map((r: { slot_name: string }) => r.slot_name);
        if (row.timeline !== null && row.timeline > 1) {
          const file = `pg_wal/${row.timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
          const h = await c.query('SELECT pg_read_file($1, 0, 1048576, true) AS h', [file]);
          forks = parseTimelineHistory((h.rows[0] as { h: string | null }).h ?? '');
        }
      }
      return {
        reachable: true,
        inRecovery: row.recovery,
        ...(row.current ? { currentLsn: row.current } : {}),
        ...(row.received ? { receivedLsn: row.received } : {}),
        ...(row.replayed ? { replayedLsn: row.replayed } : {}),
        ...(row.timeline !== null ? { timeline: Number(row.timeline) } : {}),
        ...(row.receiver ? { walReceiver: row.receiver } : {}),
        ...(standbys ? { standbys } : {}),
        ...(slots ? { slots } : {}),
        ...(row.pending ? { pendingRestart: true } : {}),
        ...(row.config_version ? { configVersion: row.config_version } : {}),
        ...(row.recovery ? { primaryConninfo: row.conninfo } : { syncStandbyNames: row.sync_names }),
        ...(forks ? { forks } : {}),
      };
    });
  } catch (e) {
    return {
      reachable: false,
      error: e instanceof Error ? e.message : String(e),
      ...((e as { code?: string }).code === 'ECONNREFUSED' ? { refused: true } : {}),
    };
  }
}

/** pg_promote(wait): true once the instance has left recovery. */
export async function promote(ip: string, access: InstanceAccess): Promise<boolean> {
  return withClient(ip, { ...access, statementTimeoutMs: 65_000 }, async (c) => {
    const r = await c.query('SELECT pg_promote(true, 60) AS promoted');
    const promoted = (r.rows[0] as { promoted: boolean }).promoted;
    // The new timeline reaches the control file only at a checkpoint; pg_rewind of the former
    // primary reads it from there, and would otherwise find "the same timeline".
    if (promoted) await c.query('CHECKPOINT');
    return promoted;
  });
}

/** Creates the physical replication slots that are missing on the primary; returns those created. */
export async function ensureSlots(
  ip: string,
  access: InstanceAccess,
  wanted: readonly string[],
): Promise<string[]> {
  return withClient(ip, access, async (c) => {
    const have = new Set(
      (await c.query('SELECT slot_name FROM pg_replication_slots')).rows.map(
        (r: { slot_name: string }) => r.slot_name,
      ),
    );
    const created: string[] = [];
    for (const slot of wanted) {
      if (have.has(slot)) continue;
      // immediately_reserve: WAL is kept from now on, before the replica first connects.
      await c.query('SELECT pg_create_physical_replication_slot($1, true)', [slot]);
      created.push(slot);
    }
    return created;
  });
}

/** Drops replication slots that no replica uses any more; a slot still active is left for next time. */
export async function dropSlots(
  ip: string,
  access: InstanceAccess,
  slots: readonly string[],
): Promise<string[]> {
  return withClient(ip, access, async (c) => {
    const dropped: string[] = [];
    for (const slot of slots) {
      const r = await c.query(
        'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active',
        [slot],
      );
      if (r.rowCount) dropped.push(slot);
    }
    return dropped;
  });
}

/** A replica's WAL positions as the promotion check reads them (all optional: NULL in PostgreSQL). */
export interface ReplicaPositions {
  readonly receivedLsn?: string;
  readonly replayedLsn?: string;
  readonly timeline?: number;
  /** Replay has stopped (waitingForWal): the positions are final. */
  readonly settled: boolean;
}

export type DetachResult =
  | ({ readonly detached: true } & ReplicaPositions)
  | ({ readonly detached: false; readonly why: string; readonly primary?: true } & Partial<ReplicaPositions>);

/**
 * The startup process's wait events while it has no WAL of its own left to replay: waiting for
 * the WAL receiver's data (RecoveryWalStream), for wal_retrieve_retry_interval before looking
 * in pg_wal again (what a detached replica does), or for a WAL receiver it told to stop to
 * exit (WalReceiverExit: a receiver stuck or frozen; the startup process asks for a stream
 * only once the WAL on its disk is replayed, so what that receiver flushed is in its received
 * position). Any other state (no wait event while it replays, a recovery conflict, I/O) means
 * replay may still move.
 */
const waitingForWal = new Set(['RecoveryWalStream', 'RecoveryRetrieveRetryInterval', 'WalReceiverExit']);

/**
 * Detaches a replica from whatever primary it streams from: primary_conninfo cleared in
 * postgresql.auto.conf (ALTER SYSTEM is allowed on a standby) and reloaded, which stops its WAL
 * receiver; detached only once the receiver is confirmed gone, so the replica can no longer
 * acknowledge a synchronous commit for anyone. Then waits, within `waitMs`, for its replay to
 * settle: a replica that has just restarted is still replaying the WAL on its disk, and its
 * positions mean nothing final until the startup process waits for more in two readings in a
 * row with the same replayed position. Idempotent; the setting survives restarts until
 * attachReplica.
 */
export async function detachReplica(
  ip: string,
  access: InstanceAccess,
  waitMs = 3000,
): Promise<DetachResult> {
  return withClient(ip, access, async (c) => {
    const rec = (await c.query('SELECT pg_is_in_recovery() AS r')).rows[0] as { r: boolean };
    if (!rec.r) return { detached: false, why: 'it answers as a primary', primary: true };
    if ((await c.query("SELECT current_setting('primary_conninfo') AS v")).rows[0].v !== '') {
      await c.query("ALTER SYSTEM SET primary_conninfo = ''");
      await c.query('SELECT pg_reload_conf()');
    }
    const deadline = Date.now() + waitMs;
    let before: { replayed: string | null; detached: boolean } | undefined;
    for (;;) {
      const r = await c.query(
        `SELECT (SELECT count(*) FROM pg_stat_wal_receiver) AS receivers,
                current_setting('primary_conninfo') AS conninfo,
                pg_last_wal_receive_lsn()::text AS received,
                pg_last_wal_replay_lsn()::text AS replayed,
                (SELECT wait_event FROM pg_stat_activity WHERE backend_type = 'startup') AS startup_wait,
                (${walTimelineSql}) AS timeline`,
      );
      const row = r.rows[0] as {
        receivers: string;
        conninfo: string;
        received: string | null;
        replayed: string | null;
        startup_wait: string | null;
        timeline: number | null;
      };
      const detached = Number(row.receivers) === 0 && row.conninfo === '';
      const replayStopped = before?.replayed === row.replayed && waitingForWal.has(row.startup_wait ?? '');
      const settled = detached && before?.detached === true && replayStopped;
      const positions: ReplicaPositions = {
        settled,
        ...(row.received ? { receivedLsn: row.received } : {}),
        ...(row.replayed ? { replayedLsn: row.replayed } : {}),
        ...(row.timeline !== null ? { timeline: Number(row.timeline) } : {}),
      };
      if (settled) return { detached: true, ...positions };
      if (Date.now() >= deadline)
        return detached
          ? { detached: true, ...positions }
          : {
              detached: false,
              why:
                row.conninfo === '' ? 'its WAL receiver has not stopped' : 'primary_conninfo did not reload',
              ...positions,
              // Still attached (to a primary reported stopped, the one case it may count): final
              // once replay waits for WAL that cannot come.
              settled: replayStopped,
            };
      before = { replayed: row.replayed, detached };
      await new Promise((r) => setTimeout(r, 100));
    }
  });
}

/** Points a replica at `conninfo` (postgresql.auto.conf, reloaded): its WAL receiver starts streaming from there. */
export async function attachReplica(ip: string, access: InstanceAccess, conninfo: string): Promise<void> {
  await withClient(ip, access, async (c) => {
    await c.query(`ALTER SYSTEM SET primary_conninfo = ${c.escapeLiteral(conninfo)}`);
    await c.query('SELECT pg_reload_conf()');
  });
}
