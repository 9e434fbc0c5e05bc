import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type RiskFeature, riskFeatures } from '../../common/resources/kinds/riskModel.js';
import { scratchDir, waitUntil } from '../../test/harness/process.js';
import { seeded } from '../../test/harness/random.js';
import { startRedisCluster } from '../../test/harness/redisCluster.js';
import { scrapedMetric } from '../../test/harness/registry.js';
import { trainModel } from '../../test/harness/trainer.js';
import { startUpstream } from '../../test/harness/upstream.js';
import { abSummary } from '../lib/compare.js';
import type { LoadResult } from '../lib/measure.js';
import type { Scenario } from './index.js';
import { benchGateway, measured, signedInUsers, USERS } from './quota.js';

/** Every documented feature, in the CRD's order. */
const FEATURES = [...riskFeatures];

/** Seeded ordinary traffic for the model: rates log-normal, a few addresses, rare failures. */
function ordinaryRows(n: number, seed: number): number[][] {
  const { next, normal } = seeded(seed);
  return Array.from({ length: n }, () => {
    const perMinute = 1 + Math.floor(Math.exp(2 + 0.8 * normal()));
    const row: Record<RiskFeature, number> = {
      subjectRate1m: perMinute,
      subjectRate1h: perMinute * (20 + Math.floor(next() * 40)),
      distinctSourceIPs1h: 1 + Math.floor(next() * 3),
      recentFailures15m: next() < 0.01 ? 1 : 0,
      hourOfDay: next() * 24,
      dayOfWeek: Math.floor(next() * 7),
      newUserAgent: next() < 0.02 ? 1 : 0,
      pathNovelty: next() < 0.05 ? 1 : 0,
      writeMethod: next() < 0.2 ? 1 : 0,
      anonymous: 0,
    };
    return FEATURES.map((f) => row[f]);
  });
}

/**
 * The quota scenario's pipeline (cached JWT, access rules, Redis Cluster quota) with and
 * without a RiskModel scoring every request (a model the real trainer made; thresholds no
 * bench request reaches, so every check is allowed and does the same work): checks/s, p99,
 * the mean batch size and a batch's time from start to scores per row. The subject's features are observed
 * by the quota's own script call: the Redis round trips per check must stay 1.
 */
/** The RiskModel's batch.maxDelay; NOX_BENCH_RISK_MAX_DELAY (e.g. 0ms) to compare. */
const MAX_DELAY = process.env.NOX_BENCH_RISK_MAX_DELAY || '1ms';

export const risk: Scenario = {
  name: 'risk',
  describe: `quota's pipeline (${USERS} users, cached JWTs, 3+3 Redis Cluster) without and with a RiskModel (${FEATURES.length} features, batch 32 / ${MAX_DELAY})`,
  async run({ durationS, concurrency }) {
    const dir = scratchDir('bench-risk');
    const stops: (() => Promise<void>)[] = [];
    const results: LoadResult[] = [];
    try {
      const users = await signedInUsers(dir, stops);
      const model = await trainModel({
        features: FEATURES,
        rows: ordinaryRows(5000, 7),
        contamination: 0.001,
      });
      const withRisk = join(dir, 'policy-risk.yaml');
      writeFileSync(
        withRisk,
        `${readFileSync(users.policyPath, 'utf8')}---
apiVersion: nox.dev/v1alpha1
kind: RiskModel
metadata: { name: bench-risk }
spec:
  match: { paths: [{ type: Prefix, value: /api }] }
  failureMode: Closed
  model: { path: ${model.path}, sha256: "${model.sha256}" }
  features: [${FEATURES.join(', ')}]
  thresholds: { challenge: 0.9999, deny: 0.99995, block: 0.99999 }
  batch: { maxSize: 32, maxDelay: ${MAX_DELAY} }
`,
      );
      const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
      stops.push(() => cluster.stop());
      const upstream = await startUpstream();
      stops.push(() => upstream.close());

      // ABBA: the machine drifts over minutes; each mode gets an early and a late run.
      for (const mode of ['Off', 'On', 'On', 'Off'] as const) {
        const gw = await benchGateway({
          policyPath: mode === 'On' ? withRisk : users.policyPath,
          cluster,
          upstreamPort: upstream.port,
          users,
          concurrency,
          profileIn: `risk-${mode}`,
          ready: async (httpPort) => {
            if (mode === 'On')
              await waitUntil(
                'the risk model loaded',
                async () =>
                  (await scrapedMetric(httpPort, 'nox_risk_model_loads_total', { result: 'loaded' })) >= 1,
                30_000,
              );
          },
        });
        try {
          await gw.grpc(2)();
          await gw.http(2)();
          for (const load of [gw.grpc(durationS), gw.http(durationS)]) {
            const r = await measured(load, gw.target, cluster);
            // A check the model refused (or could not score) would be measured as a cheaper
            // one: the thresholds are out of reach, so any is a broken setup. (Quota store
            // timeouts on a busy machine are counted in the results, as in the quota bench.)
            if ((r.extra?.riskNotAllowed ?? 0) > 0 || (r.extra?.riskFailures ?? 0) > 0)
              throw new Error(`the model refused or failed checks: ${JSON.stringify(r.extra)}`);
            results.push({ ...r, tool: `${r.tool} risk=${mode}` });
          }
        } finally {
          await gw.stop();
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
          `  ${via} with risk: mean batch ${mean('riskBatchMean').toFixed(1)} rows, batch start to scores ${mean('riskBatchWallUsPerCheck').toFixed(1)} µs per row, Redis round trips per check ${mean('redisRoundTripsPerCheck').toFixed(3)}\n`,
        );
      }
    } finally {
      for (const stop of stops.reverse()) await stop();
      rmSync(dir, { recursive: true, force: true });
    }
    return results;
  },
};
