import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startEnvoy } from '../../test/harness/envoy.js';
import { scratchDir, waitUntil } from '../../test/harness/process.js';
import { startRedisCluster } from '../../test/harness/redisCluster.js';
import { scrapedMetric } from '../../test/harness/registry.js';
import { startSidecar } from '../../test/harness/sidecar.js';
import { trainModel } from '../../test/harness/trainer.js';
import { startUpstream } from '../../test/harness/upstream.js';
import { abSummary } from '../lib/compare.js';
import { ghz, type LoadResult, wrk } from '../lib/measure.js';
import { wrkLua } from '../lib/tokens.js';
import type { Scenario } from './index.js';
import { measured, signedInUsers, USERS } from './quota.js';

/** Every feature the sidecar computes (recentFailures15m is not recorded yet). */
const FEATURES = [
  'subjectRate1m',
  'subjectRate1h',
  'distinctSourceIPs1h',
  'hourOfDay',
  'dayOfWeek',
  'newUserAgent',
  'pathNovelty',
  'writeMethod',
  'anonymous',
];

/** Seeded (mulberry32) ordinary traffic for the model: rates log-normal, a few addresses. */
function ordinaryRows(n: number, seed: number): number[][] {
  let x = seed >>> 0;
  const next = () => {
    x = (x + 0x6d2b79f5) >>> 0;
    let t = Math.imul(x ^ (x >>> 15), 1 | x);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
  return Array.from({ length: n }, () => {
    const perMinute = 1 + Math.floor(Math.exp(2 + 0.8 * normal()));
    return [
      perMinute,
      perMinute * (20 + Math.floor(next() * 40)),
      1 + Math.floor(next() * 3),
      next() * 24,
      Math.floor(next() * 7),
      next() < 0.02 ? 1 : 0,
      next() < 0.05 ? 1 : 0,
      next() < 0.2 ? 1 : 0,
      0,
    ];
  });
}

/**
 * The quota scenario's pipeline (cached JWT, access rules, Redis Cluster quota) with and
 * without a RiskModel scoring every request (a model the real trainer made; thresholds no
 * bench request reaches, so every check is allowed and does the same work): checks/s, p99,
 * the mean batch size and the inference time per check. The subject's features are observed
 * by the quota's own script call: the Redis round trips per check must stay 1.
 */
export const risk: Scenario = {
  name: 'risk',
  describe: `quota's pipeline (${USERS} users, cached JWTs, 3+3 Redis Cluster) without and with a RiskModel (${FEATURES.length} features, batch 32 / 1 ms)`,
  async run({ durationS, concurrency }) {
    const dir = scratchDir('bench-risk');
    const stops: (() => Promise<void>)[] = [];
    const results: LoadResult[] = [];
    try {
      const { tokens, path, ghzFile, wrkFile, policyPath } = await signedInUsers(dir, stops);
      const model = await trainModel({
        features: FEATURES,
        rows: ordinaryRows(5000, 7),
        contamination: 0.001,
      });
      const withRisk = join(dir, 'policy-risk.yaml');
      writeFileSync(
        withRisk,
        `${readFileSync(policyPath, 'utf8')}---
apiVersion: nox.dev/v1alpha1
kind: RiskModel
metadata: { name: bench-risk }
spec:
  match: { paths: [{ type: Prefix, value: /api }] }
  failureMode: Closed
  model: { path: ${model.path}, sha256: "${model.sha256}" }
  features: [${FEATURES.join(', ')}]
  thresholds: { challenge: 0.9999, deny: 0.99995, block: 0.99999 }
  batch: { maxSize: 32, maxDelay: 1ms }
`,
      );
      const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
      stops.push(() => cluster.stop());
      const upstream = await startUpstream();
      stops.push(() => upstream.close());

      // ABBA: the machine drifts over minutes; each mode gets an early and a late run.
      for (const mode of ['Off', 'On', 'On', 'Off'] as const) {
        const sidecar = await startSidecar({
          policyPath: mode === 'On' ? withRisk : policyPath,
          env: {
            NOX_LOG_LEVEL: 'warn',
            NOX_QUOTA_STORE: 'redis-cluster',
            NOX_REDIS_NODES: cluster.startupNodes.map((n) => `${n.host}:${n.port}`).join(','),
            NOX_REDIS_WAIT_REPLICAS: '1',
          },
        });
        const envoy = await startEnvoy({ authzPort: sidecar.grpcPort, upstreamPort: upstream.port });
        try {
          if (mode === 'On')
            await waitUntil(
              'the risk model loaded',
              async () =>
                (await scrapedMetric(sidecar.httpPort, 'nox_risk_model_loads_total', { result: 'loaded' })) >=
                1,
              30_000,
            );
          const url = `${envoy.url}${path}`;
          const probe = await fetch(url, { headers: { authorization: `Bearer ${tokens[0]}` } });
          if (probe.status !== 200)
            throw new Error(`a bench request was refused: ${probe.status} ${await probe.text()}`);
          const target = { httpPort: sidecar.httpPort, pid: sidecar.service.child.pid! };
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
            const r = await measured(load, target, cluster);
            if ((r.extra?.denied ?? 0) > 0)
              throw new Error(`denied checks in a risk bench run: ${JSON.stringify(r.extra)}`);
            results.push({ ...r, tool: `${r.tool} risk=${mode}` });
          }
        } finally {
          await envoy.stop();
          await sidecar.stop();
        }
      }
      process.stdout.write(
        abSummary(
          results,
          'risk',
          ['Off', 'On'],
          [
            { label: 'CPU per check: sidecar', field: 'sidecarCpuUsPerCheck', unit: 'µs' },
            { label: 'Redis round trips per check', field: 'redisRoundTripsPerCheck', unit: '' },
          ],
        ),
      );
      for (const via of ['grpc', 'envoy']) {
        const on = results.filter((r) => r.via === via && r.tool.endsWith('risk=On'));
        const mean = (f: string) => on.reduce((s, r) => s + (r.extra?.[f] ?? 0), 0) / on.length;
        process.stdout.write(
          `  ${via} with risk: mean batch ${mean('riskBatchMean').toFixed(1)} rows, inference ${mean('riskInferenceUsPerCheck').toFixed(1)} µs per check, Redis round trips per check ${mean('redisRoundTripsPerCheck').toFixed(3)}\n`,
        );
      }
    } finally {
      for (const stop of stops.reverse()) await stop();
      rmSync(dir, { recursive: true, force: true });
    }
    return results;
  },
};
