import { readFileSync, rmSync } from 'node:fs';
import pg from 'pg';
import { migrate } from '../../common/db/migrate.js';
import { createLogger } from '../../common/logger.js';
import { pgQuery, startPostgres } from '../../test/harness/postgres.js';
import { scratchDir } from '../../test/harness/process.js';
import { startRedisCluster } from '../../test/harness/redisCluster.js';
import { startUpstream } from '../../test/harness/upstream.js';
import { abSummary } from '../lib/compare.js';
import { idlePriority, type LoadResult, processTreeCpuSeconds } from '../lib/measure.js';
import { settledScrape, sum } from '../lib/metrics.js';
import type { Scenario } from './index.js';
import { benchGateway, measured, signedInUsers, USERS } from './quota.js';

/**
 * The quota scenario's full pipeline (cached JWT, access rules, Redis Cluster quota) with a
 * PostgreSQL for the sidecar, audit BestEffort against audit Off, one after the other on the
 * same machine and load: checks/s, p99 and the CPU each event costs. Every check must become
 * a row: the run fails otherwise.
 */
export const audit: Scenario = {
  name: 'audit',
  describe: `quota's pipeline (${USERS} users, cached JWTs, 3+3 Redis Cluster) with a PostgreSQL (priority ${process.env.NOX_BENCH_PG_PRIORITY === 'normal' ? 'normal' : 'SCHED_IDLE'}): audit BestEffort vs Off`,
  async run({ durationS, concurrency }) {
    const dir = scratchDir('bench-audit');
    const stops: (() => Promise<void>)[] = [];
    const results: LoadResult[] = [];
    try {
      const users = await signedInUsers(dir, stops);

      const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
      stops.push(() => cluster.stop());
      const db = await startPostgres();
      stops.push(() => db.stop());
      const postmaster = Number(readFileSync(`${db.dataDir}/postmaster.pid`, 'utf8').split('\n')[0]);
      // A deployment runs PostgreSQL on nodes of its own (the PostgresCluster), not beside the
      // gateway: here it takes only CPU nothing else wants, so that the comparison is what audit
      // costs the sidecar; PostgreSQL's own CPU per event is reported apart.
      // NOX_BENCH_PG_PRIORITY=normal shares the cores with it as equals instead.
      if (process.env.NOX_BENCH_PG_PRIORITY !== 'normal') idlePriority(postmaster);
      const pool = new pg.Pool({ connectionString: db.connectionString, max: 1 });
      await migrate(pool, createLogger('bench', { level: 'silent' }));
      await pool.end();
      const upstream = await startUpstream();
      stops.push(() => upstream.close());

      let lifetimeChecks = 0;
      // Three of each, in the order ABBAAB so that a machine that slows down (or speeds up) over
      // the run weighs on both modes alike: one run moves by up to ±8 % with whatever else the
      // machine does; the summary compares medians.
      for (const mode of ['Off', 'BestEffort', 'BestEffort', 'Off', 'Off', 'BestEffort'] as const) {
        const gw = await benchGateway({
          policyPath: users.policyPath,
          cluster,
          upstreamPort: upstream.port,
          users,
          concurrency,
          env: { NOX_DATABASE_URL: db.connectionString, NOX_AUDIT: mode, POD_NAME: `bench-${mode}` },
        });
        const { sidecar, target } = gw;
        try {
          await gw.grpc(2)();
          await gw.http(2)();
          for (const load of [gw.grpc(durationS), gw.http(durationS)]) {
            const before = await settledScrape(sidecar.httpPort);
            const pg0 = processTreeCpuSeconds(postmaster);
            const t0 = performance.now();
            const r = await measured(load, target, cluster);
            const wallS = (performance.now() - t0) / 1000;
            const pgCpuS = processTreeCpuSeconds(postmaster) - pg0;
            const after = await settledScrape(sidecar.httpPort);
            const checks = r.extra?.checks ?? Number.NaN;
            r.extra = {
              ...r.extra,
              audit: mode === 'Off' ? 0 : 1,
              // What each check cost PostgreSQL (all its processes), beside the sidecar's own
              // (measured): the difference between the modes is an event's cost.
              postgresCpuPct: Math.round((pgCpuS / wallS) * 100),
              postgresCpuUsPerCheck: Math.round((pgCpuS * 1e6) / checks),
            };
            if (mode !== 'Off') {
              const d = (name: string) => sum(after, name) - sum(before, name);
              r.extra.auditRecorded = d('nox_audit_events_recorded_total');
              r.extra.auditDropped = d('nox_audit_events_dropped_total');
            }
            results.push({ ...r, tool: `${r.tool} audit=${mode}` });
          }
          lifetimeChecks = sum(await settledScrape(sidecar.httpPort), 'nox_checks_total');
        } finally {
          await gw.stop(); // the sidecar's stop is graceful: the spool is flushed to PostgreSQL
        }
        if (mode !== 'Off') {
          // Every decision of the sidecar's life (warm-ups, probe, loads) is a row, once.
          const [row] = await pgQuery<{ n: string; d: string }>(
            db,
            'SELECT count(*) AS n, count(DISTINCT id) AS d FROM audit_decisions WHERE sidecar = $1',
            [`bench-${mode}`],
          );
          process.stdout.write(`audit ${mode}: ${row!.n} rows (${row!.d} distinct) in PostgreSQL\n`);
          if (row!.n !== row!.d) throw new Error('duplicate audit rows');
          if (Number(row!.n) !== lifetimeChecks)
            throw new Error(`${lifetimeChecks} checks decided, but ${row!.n} audit rows`);
          // TRUNCATE, not DELETE: no dead rows for autovacuum to clean up during the next runs.
          await pgQuery(db, 'TRUNCATE audit_decisions');
        }
      }
      // The CPU an event costs: BestEffort's median per check minus Off's, the sidecar's and
      // PostgreSQL's.
      process.stdout.write(
        abSummary(
          results,
          'audit',
          ['Off', 'BestEffort'],
          [
            { label: 'CPU per event: sidecar', field: 'sidecarCpuUsPerCheck', unit: 'µs' },
            { label: 'PostgreSQL', field: 'postgresCpuUsPerCheck', unit: 'µs' },
          ],
        ),
      );
    } finally {
      for (const stop of stops.reverse()) await stop();
      rmSync(dir, { recursive: true, force: true });
    }
    return results;
  },
};
