import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startEnvoy } from '../../test/harness/envoy.js';
import { scratchDir } from '../../test/harness/process.js';
import { startSidecar } from '../../test/harness/sidecar.js';
import { startUpstream } from '../../test/harness/upstream.js';
import { ghz, type LoadResult, peakRssMiB, wrk } from '../lib/measure.js';
import { realisticCheckRequest } from '../lib/requests.js';
import type { Scenario } from './index.js';

export const allowAllPolicy = `
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: bench-allow }
spec:
  rules:
    - { name: no-admin, action: Deny, when: { paths: [{ value: /admin }] } }
    - { name: everyone, action: Allow }
`;

/** The cheapest real decision: a policy that allows the path. Measures the fixed cost of a check. */
export const allow: Scenario = {
  name: 'allow',
  describe: 'an AccessPolicy allows the path; no identity, quota, risk or audit',
  async run({ durationS, concurrency }) {
    const policyPath = join(scratchDir('bench-policy'), 'policy.yaml');
    writeFileSync(policyPath, allowAllPolicy);
    const upstream = await startUpstream();
    const sidecar = await startSidecar({ policyPath, env: { NOX_LOG_LEVEL: 'warn' } });
    const envoy = await startEnvoy({ authzPort: sidecar.grpcPort, upstreamPort: upstream.port });
    const pid = sidecar.service.child.pid!;
    const results: LoadResult[] = [];
    try {
      // Warm-up: JIT, connection pools.
      await ghz({
        port: sidecar.grpcPort,
        data: realisticCheckRequest('/api/items'),
        concurrency,
        durationS: 2,
      });
      const direct = await ghz({
        port: sidecar.grpcPort,
        data: realisticCheckRequest('/api/items'),
        concurrency,
        durationS,
      });
      direct.sidecarPeakRssMiB = peakRssMiB(pid);
      results.push(direct);
      await wrk({ url: `${envoy.url}/api/items`, concurrency, durationS: 2 });
      const viaEnvoy = await wrk({ url: `${envoy.url}/api/items`, concurrency, durationS });
      viaEnvoy.sidecarPeakRssMiB = peakRssMiB(pid);
      results.push(viaEnvoy);
    } finally {
      await envoy.stop();
      await sidecar.stop();
      await upstream.close();
    }
    return results;
  },
};
