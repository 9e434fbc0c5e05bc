import { join } from 'node:path';
import { startEnvoy } from '../test/harness/envoy.js';
import { freePort, isFree } from '../test/harness/ports.js';
import { startSidecar } from '../test/harness/sidecar.js';
import { repoRoot } from '../test/harness/tools.js';
import { startUpstream } from '../test/harness/upstream.js';

/**
 * `make demo`: a local gateway from real parts — Envoy with the ext_authz filter, the
 * nox-authz sidecar in standalone mode on the manifests in examples/demo/, and a small
 * upstream that echoes what reaches it. Ctrl-C stops everything.
 */
async function main(): Promise<void> {
  const policyPath = join(repoRoot, 'examples', 'demo');
  const upstream = await startUpstream();
  const sidecar = await startSidecar({ policyPath });
  const listenPort = (await isFree(10000)) ? 10000 : await freePort();
  const envoy = await startEnvoy({ authzPort: sidecar.grpcPort, upstreamPort: upstream.port, listenPort });
  const url = envoy.url;
  process.stdout.write(`
Nox demo is running.
  Envoy (ext_authz → nox-authz):  ${url}
  nox-authz gRPC:                 127.0.0.1:${sidecar.grpcPort}
  nox-authz metrics and health:   http://127.0.0.1:${sidecar.httpPort}/metrics  /healthz  /readyz
  policy:                         ${policyPath}
  logs:                           ${sidecar.service.logFile}, ${envoy.service.logFile}

Try:
  curl -i ${url}/hello                        # allowed: the upstream echoes the x-nox-* headers it received
  curl -i ${url}/admin/users                  # denied: 403 ACCESS_DENIED (AccessPolicy demo-access, rule no-admin)
  curl -i --path-as-is '${url}/x/../admin'    # still denied: the path is normalized before the policy sees it
  curl -i '${url}/admin;jsessionid=x'         # denied too: read as Tomcat or Spring would (path parameters dropped)
  curl -i ${url}/ADMIN/users                  # denied too: read as a case-insensitive upstream would
  curl -i -H 'X-Nox-User: root' ${url}/hello  # allowed, but the upstream never sees the forged header
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{http_code} ' ${url}/api/items; done; echo
                                              # 200 200 200 200 200 429: QuotaPolicy demo-quota, 5 per minute per client
  curl -i ${url}/api/items                    # the 429 carries Retry-After, RateLimit and RateLimit-Policy
  curl -s http://127.0.0.1:${sidecar.httpPort}/metrics | grep -E 'nox_checks_total|nox_quota_checks_total'

Edit a manifest in ${policyPath} and save: the sidecar reloads it within a second, without a
restart; an invalid edit is logged and the previous version stays in force.
Quotas use the in-process store here (one sidecar); identity, risk scoring and the
PostgreSQL audit log are not part of this demo yet.
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
