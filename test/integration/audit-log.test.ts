import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../common/db/migrate.js';
import { createLogger } from '../../common/logger.js';
import type { ICheckResponse } from '../../proto/envoy.js';
import { AuditLog } from '../../sidecar/audit/auditLog.js';
import { decisionRow } from '../../sidecar/audit/decisionAudit.js';
import { encodeRecord } from '../../sidecar/audit/tables.js';
import { httpCheck, SidecarClient } from '../harness/grpcClient.js';
import { testLog } from '../harness/log.js';
import { openPolicy, policyDir } from '../harness/policies.js';
import { type PgNode, pgQuery, startPostgres } from '../harness/postgres.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { scrapedMetric } from '../harness/registry.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';

/**
 * The audit log against a real PostgreSQL and the built sidecar: every decision the sidecar
 * answers is a row, exactly once, through PostgreSQL outages, restarts and kills, within what
 * each mode promises.
 */
const log = createLogger('audit-log-test', { level: 'silent' });
const FLUSH_MS = 100;

const decisionIdOf = (r: ICheckResponse): string | undefined => {
  const all = [...(r.okResponse?.headers ?? []), ...(r.deniedResponse?.headers ?? [])];
  return all.find((h) => h.header?.key === 'x-nox-decision-id')?.header?.value ?? undefined;
};

/** `sidecar`'s metric `name` summed over its labels, from /metrics. */
const metric = (sidecar: Sidecar, name: string) => scrapedMetric(sidecar.httpPort, name);

describe('the audit log: each decision a row in PostgreSQL, once, through failures', () => {
  let node: PgNode;
  const sidecars: Sidecar[] = [];
  const clients: SidecarClient[] = [];

  beforeAll(async () => {
    node = await startPostgres();
    const pool = new pg.Pool({ connectionString: node.connectionString, max: 1 });
    await migrate(pool, log);
    await pool.end();
  }, 120_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    for (const s of sidecars) await s.stop().catch(() => {});
    await node?.stop();
  });

  const audited = async (
    name: string,
    mode: 'BestEffort' | 'Durable',
    spool: string,
    env: NodeJS.ProcessEnv = {},
  ) => {
    const s = await startSidecar({
      policyPath: policyDir(`audit-${name}`, openPolicy),
      env: {
        NOX_DATABASE_URL: node.connectionString,
        NOX_AUDIT: mode,
        NOX_AUDIT_SPOOL_DIR: spool,
        NOX_AUDIT_FLUSH_MS: String(FLUSH_MS),
        POD_NAME: name,
        ...env,
      },
    });
    sidecars.push(s);
    const client = new SidecarClient(s.grpcPort);
    clients.push(client);
    return { s, client };
  };

  /** `n` checks, `concurrency` at a time, until `stop()` says so: the decision ids answered, in order. */
  const load = (
    client: SidecarClient,
    opts: { n?: number; concurrency?: number; stop?: () => boolean } = {},
  ) => {
    const answered: { id: string; at: number; allowed: boolean }[] = [];
    let sent = 0;
    const worker = async () => {
      while ((opts.n === undefined || sent < opts.n) && !opts.stop?.()) {
        sent++;
        try {
          const r = await client.check(httpCheck(`/items/${sent}`), 5000);
          const id = decisionIdOf(r);
          if (id) answered.push({ id, at: Date.now(), allowed: !!r.okResponse });
        } catch {
          /* not answered: the sidecar is gone */
        }
      }
    };
    const done = Promise.all(Array.from({ length: opts.concurrency ?? 8 }, worker));
    return { answered, done, sent: () => sent };
  };

  const rowsOf = async (sidecar: string) =>
    pgQuery<{ id: string; n: string }>(
      node,
      'SELECT id::text, count(*) OVER (PARTITION BY id) AS n FROM audit_decisions WHERE sidecar = $1',
      [sidecar],
    );

  /** Every id in `ids` has exactly one row, and `sidecar` has no other rows than `extra` allows. */
  const expectExactlyOnce = async (sidecar: string, ids: readonly string[], within = 60_000) => {
    await waitUntil(
      `${ids.length} decisions of ${sidecar} in PostgreSQL`,
      async () => {
        const have = new Set((await rowsOf(sidecar)).map((r) => r.id));
        return ids.every((id) => have.has(id));
      },
      within,
    );
    const rows = await rowsOf(sidecar);
    expect(
      rows.filter((r) => Number(r.n) > 1),
      'duplicated rows',
    ).toEqual([]);
    return rows;
  };

  it('BestEffort: every decision once, with PostgreSQL stopped for a while in the middle (spooled, then replayed)', async () => {
    const { s, client } = await audited('steady', 'BestEffort', scratchDir('audit-spool'));
    const before = load(client, { n: 400 });
    await before.done;
    await node.kill();
    const during = load(client, { n: 600 });
    await during.done;
    await waitUntil(
      'events waiting in the spool',
      async () => (await metric(s, 'nox_audit_spool_bytes')) > 0,
      10_000,
    );
    const spooled = await metric(s, 'nox_audit_spool_bytes');
    await node.restart();
    const ids = [...before.answered, ...during.answered].map((a) => a.id);
    expect(ids.length).toBe(1000);
    const rows = await expectExactlyOnce('steady', ids);
    expect(rows.length).toBe(1000);
    // The sidecar's own count of its decisions agrees with what PostgreSQL holds.
    expect(await metric(s, 'nox_checks_total')).toBe(1000);
    await waitUntil(
      'the written count reaches 1000',
      async () => (await metric(s, 'nox_audit_events_written_total')) === 1000,
      10_000,
    );
    expect(await metric(s, 'nox_audit_events_replayed_total')).toBeGreaterThan(0);
    testLog('audit BestEffort with PostgreSQL stopped', { spooledBytes: spooled, rows: rows.length });

    // What a row says, for one of them.
    const [row] = await pgQuery(node, 'SELECT * FROM audit_decisions WHERE id = $1', [ids[0]]);
    expect(row).toMatchObject({
      sidecar: 'steady',
      host: 'app.local',
      method: 'GET',
      path: '/items/1',
      policy: 'default/open',
      rule: 'default',
      decision: 'allow',
      code: 'ok',
      source_ip: '127.0.0.1',
    });
  }, 180_000);

  it('Durable: a SIGKILL of the sidecar under load loses no answered decision; the next start replays the spool', async () => {
    const spool = scratchDir('audit-spool');
    const { s, client } = await audited('durable', 'Durable', spool);
    let stop = false;
    const l = load(client, { concurrency: 16, stop: () => stop });
    await waitUntil('checks answered', async () => l.answered.length >= 1500, 60_000);
    await s.service.kill();
    stop = true;
    await l.done;
    const answered = l.answered.map((a) => a.id);
    await audited('durable', 'Durable', spool);
    const rows = await expectExactlyOnce('durable', answered);
    testLog('audit Durable, SIGKILL', { answered: answered.length, rows: rows.length, sent: l.sent() });
    // Checks in flight at the kill may have their event written without being answered.
    expect(rows.length).toBeGreaterThanOrEqual(answered.length);
    expect(rows.length).toBeLessThanOrEqual(l.sent());
  }, 180_000);

  it(`BestEffort: a SIGKILL loses at most the events of the last flush interval (${FLUSH_MS} ms)`, async () => {
    const spool = scratchDir('audit-spool');
    const { s, client } = await audited('besteffort-kill', 'BestEffort', spool);
    let stop = false;
    const l = load(client, { concurrency: 16, stop: () => stop });
    await waitUntil('checks answered', async () => l.answered.length >= 1500, 60_000);
    const killedAt = Date.now();
    await s.service.kill();
    stop = true;
    await l.done;
    await audited('besteffort-kill', 'BestEffort', spool);
    // Whatever was in the spool at the kill arrives; wait until the count stops moving.
    let last = -1;
    await waitUntil(
      'the replay finished',
      async () => {
        const n = (await rowsOf('besteffort-kill')).length;
        const settled = n === last && n > 0;
        last = n;
        return settled;
      },
      60_000,
    );
    const have = new Set((await rowsOf('besteffort-kill')).map((r) => r.id));
    const lost = l.answered.filter((a) => !have.has(a.id));
    testLog('audit BestEffort, SIGKILL', {
      answered: l.answered.length,
      lost: lost.length,
      oldestLostMsBeforeKill: lost.length ? killedAt - Math.min(...lost.map((a) => a.at)) : 0,
    });
    // Answered more than a flush interval (and a scheduling margin on a busy machine) before
    // the kill: in the spool, so in PostgreSQL.
    for (const a of lost) expect(killedAt - a.at, `decision ${a.id} lost`).toBeLessThan(FLUSH_MS + 1000);
  }, 180_000);

  it('a graceful stop with PostgreSQL down keeps the events in the spool, and the next start writes them', async () => {
    const spool = scratchDir('audit-spool');
    const { s, client } = await audited('graceful', 'BestEffort', spool);
    await node.kill();
    const l = load(client, { n: 300 });
    await l.done;
    await s.stop();
    await node.restart();
    await audited('graceful', 'BestEffort', spool);
    const rows = await expectExactlyOnce(
      'graceful',
      l.answered.map((a) => a.id),
    );
    expect(rows.length).toBe(300);
  }, 120_000);

  it('a full spool: Deny refuses checks with AUDIT_UNAVAILABLE; DropOldest keeps answering and counts what it drops', async () => {
    await node.kill();
    try {
      const deny = await audited('full-deny', 'BestEffort', scratchDir('audit-spool'), {
        NOX_AUDIT_SPOOL_MAX_BYTES: '65536',
        NOX_AUDIT_SPOOL_FULL: 'Deny',
      });
      const l = load(deny.client, { n: 600 });
      await l.done;
      const refused = l.answered.filter((a) => !a.allowed).length;
      expect(refused).toBeGreaterThan(0);
      expect(await metric(deny.s, 'nox_audit_events_refused_total')).toBe(refused);
      const r = await deny.client.check(httpCheck('/one-more'));
      expect(r.deniedResponse?.status?.code).toBe(503);
      expect(JSON.parse(r.deniedResponse?.body ?? '{}')).toMatchObject({ error: 'AUDIT_UNAVAILABLE' });

      const drop = await audited('full-drop', 'BestEffort', scratchDir('audit-spool'), {
        NOX_AUDIT_SPOOL_MAX_BYTES: '65536',
        NOX_AUDIT_SPOOL_FULL: 'DropOldest',
      });
      const d = load(drop.client, { n: 600 });
      await d.done;
      expect(d.answered.every((a) => a.allowed)).toBe(true);
      await waitUntil(
        'drops counted',
        async () => (await metric(drop.s, 'nox_audit_events_dropped_total')) > 0,
        10_000,
      );
    } finally {
      await node.restart();
    }
  }, 120_000);

  it('a malformed request is also a security event, whatever the policy samples', async () => {
    const { client } = await audited('security', 'BestEffort', scratchDir('audit-spool'));
    const malformed = await client.check({ attributes: { request: { http: { method: 'GET' } } } });
    expect(malformed.deniedResponse?.status?.code).toBe(400);
    const id = decisionIdOf(malformed);
    await waitUntil(
      'the security event in PostgreSQL',
      async () => {
        const rows = await pgQuery(node, "SELECT * FROM audit_security_events WHERE sidecar = 'security'");
        return rows.length === 1;
      },
      30_000,
    );
    const [row] = await pgQuery<{ kind: string; reason: string; detail: { decisionId: string } }>(
      node,
      "SELECT kind, reason, detail FROM audit_security_events WHERE sidecar = 'security'",
    );
    expect(row).toMatchObject({ kind: 'malformed_request', detail: { decisionId: id } });
    expect(row!.reason).toMatch(/host|path/);
    // The decision itself is there too.
    await expectExactlyOnce('security', [id!]);
  });

  it('a record PostgreSQL refuses is dropped and counted; the rest of its batch is written', async () => {
    const pool = new pg.Pool({ connectionString: node.connectionString, max: 2 });
    const registry = new Registry();
    const audit = new AuditLog({
      pool,
      registry,
      log,
      dir: scratchDir('audit-spool'),
      mode: 'BestEffort',
      maxBytes: 1 << 20,
      whenFull: 'Deny',
      flushIntervalMs: FLUSH_MS,
    });
    try {
      const row = (i: number) =>
        decisionRow(
          {
            decision: {
              allowed: true,
              allow: { upstreamHeaders: {}, responseHeaders: {} },
              decisionId: crypto.randomUUID(),
              snapshotVersion: 1,
            },
            startedAt: Date.now(),
            latencyUs: 10,
          },
          `refused-${i === 5 ? 'bad' : 'good'}`,
        );
      for (let i = 0; i < 10; i++) {
        // The sixth breaks the table's CHECK on decision.
        audit.record('audit_decisions', i === 5 ? { ...row(i), decision: 'maybe' } : row(i));
      }
      expect(await audit.flush(10_000)).toBe(true);
      const [n] = await pgQuery<{ n: number }>(
        node,
        "SELECT count(*)::int AS n FROM audit_decisions WHERE sidecar LIKE 'refused-%'",
      );
      expect(n!.n).toBe(9);
      const dropped = (await registry.getSingleMetric('nox_audit_events_dropped_total')!.get()).values;
      expect(dropped.find((v) => v.labels.reason === 'refused')?.value).toBe(1);
    } finally {
      await audit.close(1000);
      await pool.end();
    }
  });

  it('a spool holding a line cut short and a foreign line: both dropped and counted, the records around them written', async () => {
    const dir = scratchDir('audit-spool');
    const pool = new pg.Pool({ connectionString: node.connectionString, max: 2 });
    const row = (i: number) =>
      encodeRecord(
        'audit_decisions',
        decisionRow(
          {
            decision: {
              allowed: true,
              allow: { upstreamHeaders: {}, responseHeaders: {} },
              decisionId: crypto.randomUUID(),
              snapshotVersion: 1,
            },
            startedAt: Date.now() + i,
            latencyUs: 10,
          },
          'damaged-spool',
        ),
      );
    // What a damaged disk (or a foreign writer) could leave: whole lines, so not torn writes.
    const cut = row(2);
    const lines = [
      row(0),
      row(1),
      cut.slice(0, cut.lastIndexOf('\t', cut.length - 20)),
      '{"not":"audit"}',
      row(4),
    ];
    writeFileSync(join(dir, `${'0'.repeat(12)}.log`), `${lines.join('\n')}\n`);
    const registry = new Registry();
    const audit = new AuditLog({
      pool,
      registry,
      log,
      dir,
      mode: 'BestEffort',
      maxBytes: 1 << 20,
      whenFull: 'Deny',
      flushIntervalMs: FLUSH_MS,
    });
    try {
      expect(await audit.flush(10_000)).toBe(true);
      expect((await rowsOf('damaged-spool')).length).toBe(3);
      const dropped = (await registry.getSingleMetric('nox_audit_events_dropped_total')!.get()).values;
      expect(Object.fromEntries(dropped.map((v) => [v.labels.reason, v.value]))).toMatchObject({
        refused: 1,
        corrupt: 1,
      });
    } finally {
      await audit.close(1000);
      await pool.end();
    }
  });

  it('a batch sent again after its commit landed adds nothing (the cursor lost, as after a crash between commit and cursor)', async () => {
    const dir = scratchDir('audit-spool');
    const pool = new pg.Pool({ connectionString: node.connectionString, max: 2 });
    const audit = () =>
      new AuditLog({
        pool,
        registry: new Registry(),
        log,
        dir,
        mode: 'Durable',
        maxBytes: 1 << 20,
        whenFull: 'Deny',
        flushIntervalMs: FLUSH_MS,
      });
    try {
      const first = audit();
      const ids: string[] = [];
      for (let i = 0; i < 50; i++) {
        const id = crypto.randomUUID();
        ids.push(id);
        await first.record(
          'audit_decisions',
          decisionRow(
            {
              decision: {
                allowed: true,
                allow: { upstreamHeaders: {}, responseHeaders: {} },
                decisionId: id,
                snapshotVersion: 1,
              },
              startedAt: Date.now(),
              latencyUs: 10,
            },
            'replayed',
          ),
        );
      }
      expect((await first.close(10_000)).drained).toBe(true);
      writeFileSync(join(dir, 'cursor'), JSON.stringify({ segment: 0, offset: 0 }));
      expect(readFileSync(join(dir, 'cursor'), 'utf8')).toContain('"offset":0');
      const again = audit();
      expect(await again.flush(10_000)).toBe(true);
      await again.close(1000);
      const rows = await rowsOf('replayed');
      expect(rows.length).toBe(50);
      expect(new Set(rows.map((r) => r.id))).toEqual(new Set(ids));
    } finally {
      await pool.end();
    }
  });
});
