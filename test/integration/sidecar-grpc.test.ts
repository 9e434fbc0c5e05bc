import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpCheck, SidecarClient } from '../harness/grpcClient.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { type Sidecar, sidecarEntry, startSidecar } from '../harness/sidecar.js';

// The sidecar's gRPC and HTTP surfaces as a client sees them, on the built process.
describe('nox-authz gRPC surface', () => {
  let sidecar: Sidecar;
  let client: SidecarClient;
  let policyFile: string;
  const policy = (action: string) => `
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: grpc-test }
spec:
  rules:
    - { name: no-admin, action: ${action}, when: { paths: [{ value: /admin }] } }
    - { name: everyone, action: Allow }
`;

  beforeAll(async () => {
    policyFile = join(scratchDir('policy'), 'policy.yaml');
    writeFileSync(policyFile, policy('Deny'));
    sidecar = await startSidecar({ policyPath: policyFile });
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
    expect(text).toMatch(
      /nox_checks_total\{decision="deny",code="access_denied",program="nox-authz"\} [1-9]/,
    );
    expect(text).toMatch(
      /nox_checks_total\{decision="deny",code="malformed_request",program="nox-authz"\} [1-9]/,
    );
    expect(text).toContain('nox_check_duration_seconds_bucket');
    expect((await fetch(`http://127.0.0.1:${sidecar.httpPort}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${sidecar.httpPort}/readyz`)).status).toBe(200);
  });

  it('keeps the last good version of a policy when an edit makes it invalid', async () => {
    writeFileSync(policyFile, policy('Permit'));
    const metrics = async () => (await fetch(`http://127.0.0.1:${sidecar.httpPort}/metrics`)).text();
    await waitUntil(
      'the rejection to be counted',
      async () =>
        /nox_policy_rejections_total\{kind="AccessPolicy",reason="invalid",program="nox-authz"\} 1/.test(
          await metrics(),
        ),
      3000,
      { intervalMs: 50, svc: sidecar.service },
    );
    const res = await client.check(httpCheck('/admin'));
    expect(res.deniedResponse?.status?.code).toBe(403);
    expect(JSON.parse(res.deniedResponse?.body ?? '{}').error).toBe('ACCESS_DENIED');
    expect(await metrics()).toMatch(
      /nox_policy_resources\{kind="AccessPolicy",state="accepted",program="nox-authz"\} 1/,
    );
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

// A sidecar that cannot start must exit, so its supervisor (the kubelet) restarts it and
// reports CrashLoopBackOff, instead of a process that is up but serves nothing.
describe('nox-authz start failure', () => {
  it('exits 1 with a fatal log line when its gRPC port is taken', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    const port = (taken.address() as AddressInfo).port;
    try {
      const child = spawn(process.execPath, [sidecarEntry], {
        env: { ...process.env, NOX_GRPC_HOST: '127.0.0.1', NOX_GRPC_PORT: String(port), NOX_HTTP_PORT: '0' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      expect(code).toBe(1);
      const fatal = stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { level: string; msg: string; err?: string })
        .find((l) => l.level === 'fatal');
      expect(fatal?.msg).toBe('failed to start');
      expect(fatal?.err).toMatch(/EADDRINUSE|address already in use|No address added/i);
    } finally {
      taken.close();
    }
  });
});
