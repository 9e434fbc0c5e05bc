import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { helm } from '../harness/helm.js';
import { repoRoot, tool } from '../harness/tools.js';

/**
 * examples/gateways/: each file parses, points at the Service the chart renders for
 * `helm install nox charts/nox --namespace nox-system` (the release the examples assume), on
 * its gRPC port, and the plain Envoy configuration passes `envoy --mode validate`.
 */

const dir = join(repoRoot, 'examples', 'gateways');
// biome-ignore lint/suspicious/noExplicitAny: YAML of third-party kinds (Envoy, Gateway API, Istio), read field by field
type Doc = Record<string, any>;

function docsOf(file: string): Doc[] {
  const docs = parseAllDocuments(readFileSync(join(dir, file), 'utf8'));
  for (const d of docs) expect(d.errors, `${file}: ${d.errors}`).toEqual([]);
  return docs.map((d) => d.toJS() as Doc).filter((d) => d !== null);
}

/** The chart's ext_authz Service for release "nox" in nox-system: its DNS name and gRPC port. */
async function chartService(): Promise<{ host: string; namespace: string; name: string; port: number }> {
  const res = await helm(['template', 'nox', 'charts/nox', '--namespace', 'nox-system']);
  expect(res.code, res.stderr).toBe(0);
  const svc = parseAllDocuments(res.stdout)
    .map((d) => d.toJS() as Doc)
    .find((o) => o?.kind === 'Service' && o.metadata.labels['app.kubernetes.io/component'] === 'authz');
  expect(svc).toBeDefined();
  const grpc = svc!.spec.ports.find((p: Doc) => p.name === 'grpc');
  expect(grpc.appProtocol).toBe('grpc');
  const { name, namespace } = svc!.metadata;
  return { host: `${name}.${namespace}.svc.cluster.local`, name, namespace, port: grpc.port };
}

describe('examples/gateways', () => {
  it('has the three gateways, each a set of Kubernetes-style YAML documents', () => {
    const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
    expect(files.sort()).toEqual(['envoy-gateway.yaml', 'envoy.yaml', 'istio.yaml']);
    for (const f of ['envoy-gateway.yaml', 'istio.yaml'])
      for (const d of docsOf(f)) {
        expect(d.apiVersion, f).toMatch(/^[a-z0-9.]+\/v[0-9a-z]+$|^v1$/);
        expect(d.kind, f).toMatch(/^[A-Z][A-Za-z]+$/);
        expect(d.metadata?.name, f).toMatch(/^[a-z0-9-]+$/);
      }
  });

  it('plain Envoy: passes envoy --mode validate and sends ext_authz to the chart Service, failing closed', async () => {
    const { host, port } = await chartService();
    const [config] = docsOf('envoy.yaml');
    const cluster = config!.static_resources.clusters.find((c: Doc) => c.name === 'nox_authz');
    const address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
    expect({ address: address.address, port: address.port_value }).toEqual({ address: host, port });
    // ext_authz speaks gRPC: the cluster must be HTTP/2.
    expect(
      cluster.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions']
        .explicit_http_config.http2_protocol_options,
    ).toEqual({});
    const hcm = config!.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
    const authz = hcm.http_filters.find((f: Doc) => f.name === 'envoy.filters.http.ext_authz').typed_config;
    expect(authz.failure_mode_allow).toBe(false);
    expect(authz.grpc_service.envoy_grpc.cluster_name).toBe('nox_authz');
    // Longer than Nox's own deadline (150 ms), so Nox's answer always arrives first.
    expect(Number.parseFloat(authz.grpc_service.timeout)).toBeGreaterThan(0.15);
    // A rolled pod's unread checks (refused with its GOAWAY) are retried, and enough at once.
    expect(authz.grpc_service.retry_policy.retry_on).toContain('refused-stream');
    expect(cluster.circuit_breakers.thresholds[0].max_retries).toBeGreaterThanOrEqual(1024);

    const res = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile(
        tool('envoy'),
        ['--mode', 'validate', '-c', join(dir, 'envoy.yaml'), '--log-level', 'warn'],
        { timeout: 60_000 },
        (err, stdout, stderr) =>
          resolve({ code: err ? ((err.code as number) ?? 1) : 0, out: `${stdout}${stderr}` }),
      );
    });
    expect(res.code, res.out).toBe(0);
    expect(res.out).toContain('OK');
  }, 90_000);

  it('Envoy Gateway: a SecurityPolicy extAuth on gRPC to the chart Service, failing closed, with a ReferenceGrant', async () => {
    const { name, namespace, port } = await chartService();
    const docs = docsOf('envoy-gateway.yaml');
    const policy = docs.find((d) => d.kind === 'SecurityPolicy')!;
    expect(policy.apiVersion).toBe('gateway.envoyproxy.io/v1alpha1');
    expect(policy.spec.extAuth.failOpen).toBe(false);
    expect(policy.spec.extAuth.grpc.backendRefs).toEqual([{ name, namespace, port }]);
    const route = docs.find((d) => d.kind === 'HTTPRoute')!;
    expect(policy.spec.targetRefs).toEqual([
      { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: route.metadata.name },
    ]);
    // A policy in another namespace may refer to the Service only through a grant in its namespace.
    const grant = docs.find((d) => d.kind === 'ReferenceGrant')!;
    expect(grant.metadata.namespace).toBe(namespace);
    expect(grant.spec.from).toEqual([
      { group: 'gateway.envoyproxy.io', kind: 'SecurityPolicy', namespace: policy.metadata.namespace },
    ]);
    expect(grant.spec.to).toEqual([{ group: '', kind: 'Service', name }]);
  });

  it('Istio: an envoyExtAuthzGrpc extension provider for the chart Service and a CUSTOM AuthorizationPolicy using it', async () => {
    const { host, port } = await chartService();
    const docs = docsOf('istio.yaml');
    const mesh = docs.find((d) => d.kind === 'IstioOperator')!;
    const [provider] = mesh.spec.meshConfig.extensionProviders;
    expect(provider.envoyExtAuthzGrpc).toMatchObject({ service: host, port, failOpen: false });
    const policy = docs.find((d) => d.kind === 'AuthorizationPolicy')!;
    expect(policy.spec.action).toBe('CUSTOM');
    expect(policy.spec.provider).toEqual({ name: provider.name });
    expect(policy.spec.rules).toEqual([{}]);
  });
});
