import pg from 'pg';
import type { Logger } from '../common/logger.js';

/** Which server answered a read: a replica (-ro), or the primary when no replica would. */
export type ServedBy = 'replica' | 'primary';

/**
 * The admin API's two pools: writes to the -rw Service, reads to -ro. A read whose replica
 * connection cannot be made (no replica ready, all of them down) goes to the primary, and the
 * replicas are not tried again for a few seconds, so a request does not pay the connect
 * timeout each time. Only the connection falls back: a query that fails on a replica fails
 * (a stream already half sent cannot be started again elsewhere).
 */
export class Databases {
  readonly rw: pg.Pool;
  readonly ro: pg.Pool | undefined;
  #roDownUntil = 0;

  constructor(
    rwUrl: string,
    roUrl: string,
    private readonly log: Logger,
  ) {
    const pool = (url: string, application_name: string) => {
      const p = new pg.Pool({
        connectionString: url,
        application_name,
        // Times in answers and exports are UTC, whatever the server's default.
        options: '-c TimeZone=UTC',
        max: 8,
        connectionTimeoutMillis: 2000,
      });
      p.on('error', (e) => log.warn({ err: e.message, pool: application_name }, 'postgres connection error'));
      return p;
    };
    this.rw = pool(rwUrl, 'nox-admin');
    this.ro = roUrl ? pool(roUrl, 'nox-admin-read') : undefined;
  }

  /** A connection for a read; release it with `client.release()`. */
  async reader(): Promise<{ client: pg.PoolClient; servedBy: ServedBy }> {
    if (this.ro && Date.now() >= this.#roDownUntil) {
      try {
        return { client: guarded(await this.ro.connect(), this.log), servedBy: 'replica' };
      } catch (e) {
        this.#roDownUntil = Date.now() + 5000;
        this.log.warn({ err: (e as Error).message }, 'no replica answers: reads go to the primary for 5 s');
      }
    }
    return { client: guarded(await this.rw.connect(), this.log), servedBy: 'primary' };
  }

  /** Runs `fn` on a read connection. */
  async read<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<{ value: T; servedBy: ServedBy }> {
    const { client, servedBy } = await this.reader();
    let broken = false;
    try {
      return { value: await fn(client), servedBy };
    } catch (e) {
      broken = true;
      throw e;
    } finally {
      client.release(broken);
    }
  }

  /** Runs `fn` in one transaction on the primary. */
  async write<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = guarded(await this.rw.connect(), this.log);
    let broken = false;
    try {
      await client.query('BEGIN');
      const value = await fn(client);
      await client.query('COMMIT');
      return value;
    } catch (e) {
      broken = true;
      await client.query('ROLLBACK').catch(() => {});
      throw e;
    } finally {
      client.release(broken);
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.rw.end(), this.ro?.end()]);
  }
}

/**
 * A checked-out connection that dies between statements reports it as an 'error' event, which
 * the pool listens for only on idle connections: one listener per connection, once, so that
 * it is logged rather than ending the process (the statement that follows fails anyway).
 */
const watched = new WeakSet<pg.PoolClient>();
function guarded(client: pg.PoolClient, log: Logger): pg.PoolClient {
  if (!watched.has(client)) {
    watched.add(client);
    client.on('error', (e) => log.warn({ err: e.message }, 'a PostgreSQL connection in use failed'));
  }
  return client;
}
