import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpCheck, SidecarClient } from '../harness/grpcClient.js';
import { scratchDir } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';

// The sidecar's gRPC and HTTP surfaces as a client sees them, on the built process.
describe('nox-authz gRPC surface', () => {
  let sidecar: Sidecar;
  let client: SidecarClient;
  let policyFile: string;

  beforeAll(async () => {
    policyFile = join(scratchDir('policy'), 'policy.yaml');
    writeFileSync(policyFile, 'denyPaths: [/admin]\n');
    sidecar = await startSidecar({ policyFile });
    client = new SidecarClient(sidecar.grpcPort);
  });
  afterAll(async () => {
    client?.close();
    await sidecar?.stop();
  });

  it('allows with an OK status and upstream headers', async () => {
    const res = await client.check(httpCheck('/ok'));
    expect(res.status?.code ?? 0).toBe(0);
    const keys = res.okResponse?.headers?.map((h) => h.header?.key);
    expect(keys).toContain('x-nox-decision-id');
  });

  it.each([
    ['no attributes', {}],
    ['no http request', { attributes: { request: {} } }],
    ['no method', httpCheck('/x', { method: '' })],
    ['no host', httpCheck('/x', { host: '' })],
    ['an encoded slash', httpCheck('/admin%2Fx')],
  ])('denies a request with %s as MALFORMED_REQUEST (400)', async (_name, req) => {
    const res = await client.check(req);
    expect(res.status?.code).toBe(3);
    expect(res.deniedResponse?.status?.code).toBe(400);
    expect(JSON.parse(res.deniedResponse?.body ?? '{}').error).toBe('MALFORMED_REQUEST');
  });

  it('serves grpc.health.v1 and server reflection', async () => {
    expect(await client.health()).toBe('SERVING');
    expect(await client.health('envoy.service.auth.v3.Authorization')).toBe('SERVING');
    const services = await client.listServices();
    expect(services).toContain('envoy.service.auth.v3.Authorization');
  });

  it('exports Prometheus metrics with decisions by code, and health endpoints', async () => {
    await client.check(httpCheck('/admin'));
    const text = await (await fetch(`http://127.0.0.1:${sidecar.httpPort}/metrics`)).text();
    expect(text).toMatch(/nox_checks_total\{decision="deny",code="path_denied",program="nox-authz"\} [1-9]/);
    expect(text).toMatch(
      /nox_checks_total\{decision="deny",code="malformed_request",program="nox-authz"\} [1-9]/,
    );
    expect(text).toContain('nox_check_duration_seconds_bucket');
    expect((await fetch(`http://127.0.0.1:${sidecar.httpPort}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${sidecar.httpPort}/readyz`)).status).toBe(200);
  });

  it('keeps the last good policy when a reload is invalid (SIGHUP)', async () => {
    writeFileSync(policyFile, 'denyPaths: [admin-without-slash]\n');
    sidecar.service.child.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 300));
    const res = await client.check(httpCheck('/admin'));
    expect(res.deniedResponse?.status?.code).toBe(403);
    const text = await (await fetch(`http://127.0.0.1:${sidecar.httpPort}/metrics`)).text();
    expect(text).toMatch(/nox_policy_loads_total\{result="error",program="nox-authz"\} 1/);
    expect(text).toMatch(/nox_policy_snapshot_version\{program="nox-authz"\} 1/);
  });
});

describe('nox-authz without a policy', () => {
  it('is not ready and denies every check with NOT_READY (503), never allows', async () => {
    const { startSidecarUnready } = await import('../harness/sidecar.js');
    const sidecar = await startSidecarUnready();
    const client = new SidecarClient(sidecar.grpcPort);
    try {
      expect((await fetch(`http://127.0.0.1:${sidecar.httpPort}/readyz`)).status).toBe(503);
      expect(await client.health()).toBe('NOT_SERVING');
      const res = await client.check(httpCheck('/ok'));
      expect(res.okResponse).toBeFalsy();
      expect(res.deniedResponse?.status?.code).toBe(503);
      expect(JSON.parse(res.deniedResponse?.body ?? '{}').error).toBe('NOT_READY');
    } finally {
      client.close();
      await sidecar.stop();
    }
  });
});
