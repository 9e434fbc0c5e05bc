import { rmSync } from 'node:fs';
import pg from 'pg';
import { migrate } from '../../common/db/migrate.js';
import { createLogger } from '../../common/logger.js';
import { startEnvoy } from '../../test/harness/envoy.js';
import { pgQuery, startPostgres } from '../../test/harness/postgres.js';
import { scratchDir } from '../../test/harness/process.js';
import { startRedisCluster } from '../../test/harness/redisCluster.js';
import { startSidecar } from '../../test/harness/sidecar.js';
import { startUpstream } from '../../test/harness/upstream.js';
import { ghz, type LoadResult, wrk } from '../lib/measure.js';
import { settledScrape, sum } from '../lib/metrics.js';
import { wrkLua } from '../lib/tokens.js';
import type { Scenario } from './index.js';
import { measured, signedInUsers, USERS } from './quota.js';

/**
 * The quota scenario's full pipeline (cached JWT, access rules, Redis Cluster quota) with a
 * PostgreSQL for the sidecar, audit BestEffort against audit Off, one after the other on the
 * same machine and load: checks/s, p99 and the CPU each event costs. Every check must become
 * a row: the run fails otherwise.
 */
export const audit: Scenario = {
  name: 'audit',
  describe: `quota's pipeline (${USERS} users, cached JWTs, 3+3 Redis Cluster) with a PostgreSQL: audit BestEffort vs Off`,
  async run({ durationS, concurrency }) {
    const dir = scratchDir('bench-audit');
    const stops: (() => Promise<void>)[] = [];
    const results: LoadResult[] = [];
    try {
      const { tokens, path, ghzFile, wrkFile, policyPath } = await signedInUsers(dir, stops);

      const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
      stops.push(() => cluster.stop());
      const db = await startPostgres();
      stops.push(() => db.stop());
      const pool = new pg.Pool({ connectionString: db.connectionString, max: 1 });
      await migrate(pool, createLogger('bench', { level: 'silent' }));
      await pool.end();
      const upstream = await startUpstream();
      stops.push(() => upstream.close());

      let lifetimeChecks = 0;
      for (const mode of ['Off', 'BestEffort', 'Off', 'BestEffort'] as const) {
        const sidecar = await startSidecar({
          policyPath,
          env: {
            NOX_LOG_LEVEL: 'warn',
            NOX_QUOTA_STORE: 'redis-cluster',
            NOX_REDIS_NODES: cluster.startupNodes.map((n) => `${n.host}:${n.port}`).join(','),
            NOX_DATABASE_URL: db.connectionString,
            NOX_AUDIT: mode,
            POD_NAME: `bench-${mode}`,
          },
        });
        const envoy = await startEnvoy({ authzPort: sidecar.grpcPort, upstreamPort: upstream.port });
        try {
          const target = { httpPort: sidecar.httpPort, pid: sidecar.service.child.pid! };
          const url = `${envoy.url}${path}`;
          const probe = await fetch(url, { headers: { authorization: `Bearer ${tokens[0]}` } });
          if (probe.status !== 200)
            throw new Error(`a bench token was refused: ${probe.status} ${await probe.text()}`);
          const grpc = (s: number) => () =>
            ghz({
              port: sidecar.grpcPort,
              binaryFile: ghzFile,
              env: { GOGC: '2000' },
              concurrency,
              durationS: s,
            });
          const http = (s: number) => () => wrk({ url, concurrency, durationS: s, lua: wrkLua(wrkFile) });
          await grpc(2)();
          await http(2)();
          for (const load of [grpc(durationS), http(durationS)]) {
            const before = await settledScrape(sidecar.httpPort);
            const r = await measured(load, target, cluster);
            const after = await settledScrape(sidecar.httpPort);
            r.extra = { ...r.extra, audit: mode === 'Off' ? 0 : 1 };
            if (mode !== 'Off') {
              const d = (name: string) => sum(after, name) - sum(before, name);
              r.extra.auditRecorded = d('nox_audit_events_recorded_total');
              r.extra.auditDropped = d('nox_audit_events_dropped_total');
            }
            results.push({ ...r, tool: `${r.tool} audit=${mode}` });
          }
          lifetimeChecks = sum(await settledScrape(sidecar.httpPort), 'nox_checks_total');
        } finally {
          await envoy.stop();
          await sidecar.stop(); // graceful: the spool is flushed to PostgreSQL
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
          await pgQuery(db, 'DELETE FROM audit_decisions WHERE sidecar = $1', [`bench-${mode}`]);
        }
      }
    } finally {
      for (const stop of stops.reverse()) await stop();
      rmSync(dir, { recursive: true, force: true });
    }
    return results;
  },
};
