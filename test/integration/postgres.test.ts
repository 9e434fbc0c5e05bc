import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresPair, pgQuery, startPostgresPair } from '../harness/postgres.js';
import { waitUntil } from '../harness/process.js';

describe('PostgreSQL primary + streaming replica', () => {
  let pair: PostgresPair;
  beforeAll(async () => {
    pair = await startPostgresPair();
  });
  afterAll(async () => {
    await pair?.stop();
  });

  it('streams through the replication slot', async () => {
    const slots = await pgQuery<{ active: boolean }>(
      pair.primary,
      "SELECT active FROM pg_replication_slots WHERE slot_name = 'nox_replica'",
    );
    expect(slots).toEqual([{ active: true }]);
    expect(await pgQuery(pair.replica, 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: true }]);
  });

  it('shows a row written on the primary on the replica', async () => {
    const primary = new pg.Client({ connectionString: pair.primary.connectionString });
    await primary.connect();
    try {
      await primary.query('CREATE TABLE audit_probe (id serial PRIMARY KEY, note text NOT NULL)');
      const note = `written-${Date.now()}`;
      const [row] = (
        await primary.query<{ id: number }>('INSERT INTO audit_probe (note) VALUES ($1) RETURNING id', [note])
      ).rows;

      // Asynchronous replication: poll, bounded.
      await waitUntil(
        'the row to reach the replica',
        async () => {
          const rows = await pgQuery<{ note: string }>(
            pair.replica,
            'SELECT note FROM audit_probe WHERE id = $1',
            [row!.id],
          );
          return rows[0]?.note === note;
        },
        20_000,
      );

      // waitForReplay() makes the next write visible without polling.
      await primary.query("INSERT INTO audit_probe (note) VALUES ('second')");
      await pair.waitForReplay();
      expect(await pgQuery(pair.replica, 'SELECT count(*)::int AS n FROM audit_probe')).toEqual([{ n: 2 }]);
    } finally {
      await primary.end();
    }
  });

  it('refuses writes on the replica', async () => {
    expect(await pgQuery(pair.replica, 'SHOW transaction_read_only')).toEqual([
      { transaction_read_only: 'on' },
    ]);
    // 25006 = read_only_sql_transaction
    await expect(
      pgQuery(pair.replica, "INSERT INTO audit_probe (note) VALUES ('nope')"),
    ).rejects.toMatchObject({
      code: '25006',
    });
    await expect(pgQuery(pair.replica, 'CREATE TABLE nope (x int)')).rejects.toMatchObject({ code: '25006' });
  });
});
