import { join } from 'node:path';
import { startEnvoy } from '../test/harness/envoy.js';
import { freePort, isFree } from '../test/harness/ports.js';
import { startSidecar } from '../test/harness/sidecar.js';
import { repoRoot } from '../test/harness/tools.js';
import { startUpstream } from '../test/harness/upstream.js';

/**
 * `make demo`: a local gateway from real parts — Envoy with the ext_authz filter, the
 * nox-authz sidecar in standalone mode on examples/standalone-policy.yaml, and a small
 * upstream that echoes what reaches it. Ctrl-C stops everything.
 */
async function main(): Promise<void> {
  const policyFile = join(repoRoot, 'examples', 'standalone-policy.yaml');
  const upstream = await startUpstream();
  const sidecar = await startSidecar({ policyFile });
  const listenPort = (await isFree(10000)) ? 10000 : await freePort();
  const envoy = await startEnvoy({ authzPort: sidecar.grpcPort, upstreamPort: upstream.port, listenPort });
  const url = envoy.url;
  process.stdout.write(`
Nox demo is running.
  Envoy (ext_authz → nox-authz):  ${url}
  nox-authz gRPC:                 127.0.0.1:${sidecar.grpcPort}
  nox-authz metrics and health:   http://127.0.0.1:${sidecar.httpPort}/metrics  /healthz  /readyz
  policy:                         ${policyFile}
  logs:                           ${sidecar.service.logFile}, ${envoy.service.logFile}

Try:
  curl -i ${url}/hello                      # allowed: the upstream echoes the x-nox-* headers it received
  curl -i ${url}/admin/users                # denied: 403 with Nox's JSON reason; the upstream never sees it
  curl -i --path-as-is '${url}/public/../admin'  # still denied: the path is normalized before the policy sees it
  curl -s http://127.0.0.1:${sidecar.httpPort}/metrics | grep nox_checks_total

Edit the policy and reload it without a restart:  kill -HUP ${sidecar.service.child.pid}
Not in this demo yet: identity, quotas (429), risk scoring and audit (later work).
Press Ctrl-C to stop.
`);
  const stop = async () => {
    process.stdout.write('\nstopping...\n');
    await envoy.stop();
    await sidecar.stop();
    await upstream.close();
    process.exit(0);
  };
  process.removeAllListeners('SIGINT');
  process.removeAllListeners('SIGTERM');
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
