import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNamespace, installCrds } from '../harness/crds.js';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { type Kube, startKube } from '../harness/kube.js';
import { kubeRequest, serverSideApply } from '../harness/kubeHttp.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { startUpstream, type Upstream } from '../harness/upstream.js';

// A policy created, changed and deleted while traffic flows: the decision Envoy enforces
// follows within 2 s, from files and from the Kubernetes API, without a restart.

const policy = (action: 'Allow' | 'Deny', path = '/orders') => ({
  apiVersion: 'nox.dev/v1alpha1',
  kind: 'AccessPolicy',
  metadata: { name: 'orders' },
  spec: { match: { paths: [{ value: path }] }, rules: [{ name: 'orders-rule', action }] },
});

/** Polls until Envoy answers `status`; returns how long that took. */
const until = (url: string, status: number, withinMs = 2000): Promise<number> =>
  waitUntil(`${url} to answer ${status}`, async () => (await fetch(url)).status === status, withinMs, {
    intervalMs: 25,
  });

/** The sidecar's metrics text matches `re`. */
const metricsMatch = async (sidecar: Sidecar, re: RegExp) =>
  re.test(await (await fetch(`http://127.0.0.1:${sidecar.httpPort}/metrics`)).text());

describe('policy changes from files reach Envoy’s decisions', () => {
  let dir: string;
  let upstream: Upstream;
  let sidecar: Sidecar;
  let envoy: Envoy;

  beforeAll(async () => {
    dir = scratchDir('policies');
    upstream = await startUpstream();
    // What is under test is the swap, not latency: on a machine busy with other work a check
    // can take longer than the production deadlines (150 ms here, 250 ms in Envoy), and the
    // fail-closed answer to that (503) would read as a failed swap. Generous deadlines leave
    // a swap that fails (NOT_READY, INTERNAL) as the only source of a 5xx.
    sidecar = await startSidecar({ policyPath: dir, env: { NOX_CHECK_DEADLINE_MS: '2000' } });
    envoy = await startEnvoy({
      authzPort: sidecar.grpcPort,
      upstreamPort: upstream.port,
      authzTimeoutMs: 3000,
    });
  });
  afterAll(async () => {
    await envoy?.stop();
    await sidecar?.stop();
    await upstream?.close();
  });

  it('creates, changes and deletes a policy by editing files, failing no request on the way', async () => {
    const url = `${envoy.url}/orders/1`;
    // Background traffic across every swap: each answer is a decision (200 or 403), never a 5xx.
    const seen = new Set<number>();
    const unexpected: string[] = [];
    let stop = false;
    const load = (async () => {
      while (!stop) {
        const res = await fetch(`${envoy.url}/orders/load`);
        const body = await res.text();
        seen.add(res.status);
        if (res.status !== 200 && res.status !== 403) unexpected.push(`${res.status} ${body.slice(0, 120)}`);
      }
    })();
    expect((await fetch(url)).status).toBe(403); // no policy covers the route
    const file = join(dir, 'orders.yaml');
    writeFileSync(file, JSON.stringify(policy('Allow')));
    await until(url, 200);
    writeFileSync(file, JSON.stringify(policy('Deny')));
    await until(url, 403);
    expect((await (await fetch(url)).json()) as { error: string }).toMatchObject({ error: 'ACCESS_DENIED' });
    writeFileSync(file, JSON.stringify(policy('Allow')));
    await until(url, 200);
    rmSync(file);
    await until(url, 403);
    expect((await (await fetch(url)).json()) as { error: string }).toMatchObject({ error: 'NO_POLICY' });
    stop = true;
    await load;
    expect(
      [...seen].every((st) => st === 200 || st === 403),
      `${[...seen].join()}: ${unexpected.slice(0, 5).join(' | ')}`,
    ).toBe(true);
  });

  it('keeps the policy in force while a file is half-edited (not valid YAML)', async () => {
    const url = `${envoy.url}/orders/1`;
    const file = join(dir, 'orders.yaml');
    writeFileSync(file, JSON.stringify(policy('Allow')));
    await until(url, 200);
    writeFileSync(file, 'apiVersion: nox.dev/v1alpha1\nkind: AccessPolicy\nmetadata: { name: orders\n');
    // The signal that the edit was read: the file counts as a problem.
    await waitUntil(
      'the half-edited file to be reported',
      () => metricsMatch(sidecar, /nox_config_file_problems\{program="nox-authz"\} 1/),
      2000,
      { intervalMs: 25 },
    );
    expect((await fetch(url)).status).toBe(200);
  });
});

describe('policy changes from the Kubernetes API reach Envoy’s decisions', () => {
  const ns = 'shop';
  let kube: Kube;
  let kc: KubeConfig;
  let upstream: Upstream;
  let sidecar: Sidecar;
  let envoy: Envoy;
  const apiPath = `/apis/nox.dev/v1alpha1/namespaces/${ns}/accesspolicies`;

  beforeAll(async () => {
    kube = await startKube();
    kc = kube.kubeConfig();
    await installCrds(kc);
    await createNamespace(kc, ns);
    await createNamespace(kc, 'elsewhere');
    upstream = await startUpstream();
    sidecar = await startSidecar({
      policyPath: '',
      env: { NOX_CONFIG_SOURCE: 'kubernetes', NOX_KUBECONFIG: kube.kubeconfigPath, NOX_WATCH_NAMESPACES: ns },
    });
    envoy = await startEnvoy({ authzPort: sidecar.grpcPort, upstreamPort: upstream.port });
  });
  afterAll(async () => {
    await envoy?.stop();
    await sidecar?.stop();
    await upstream?.close();
    await kube?.stop();
  });

  it('follows create, change and delete within 2 s, and survives an API server restart', async () => {
    const url = `${envoy.url}/orders/1`;
    expect((await fetch(url)).status).toBe(403);

    expect((await serverSideApply(kc, apiPath, policy('Allow'))).status).toBe(201);
    await until(url, 200);
    expect((await serverSideApply(kc, apiPath, policy('Deny'))).status).toBe(200);
    await until(url, 403);

    await kube.restartApiServer();
    // While the API server was away the sidecar kept deciding from its snapshot.
    expect((await fetch(url)).status).toBe(403);
    expect((await serverSideApply(kc, apiPath, policy('Allow'))).status).toBe(200);
    await until(url, 200, 2000);

    expect((await kubeRequest(kc, 'DELETE', `${apiPath}/orders`)).status).toBe(200);
    await until(url, 403);
  });

  it('reports a policy that references a provider that does not exist, in a log line and a metric', async () => {
    const p = {
      ...policy('Allow', '/reports'),
      metadata: { name: 'reports' },
      spec: { ...policy('Allow', '/reports').spec, providers: ['nowhere'] },
    };
    expect((await serverSideApply(kc, apiPath, p)).status).toBe(201);
    await waitUntil(
      'the warning metric',
      () =>
        metricsMatch(
          sidecar,
          /nox_policy_resources\{kind="AccessPolicy",state="warning",program="nox-authz"\} 1/,
        ),
      2000,
      { intervalMs: 50 },
    );
    const log = readFileSync(sidecar.service.logFile, 'utf8');
    expect(log).toContain('OAuth2Provider shop/nowhere does not exist');
  });

  it('ignores policies in namespaces it does not serve', async () => {
    const other = `/apis/nox.dev/v1alpha1/namespaces/elsewhere/accesspolicies`;
    expect((await serverSideApply(kc, other, policy('Allow', '/elsewhere'))).status).toBe(201);
    // The signal: a change made after it, in the namespace it serves, is in force.
    const marker = { ...policy('Allow', '/marker'), metadata: { name: 'marker' } };
    expect((await serverSideApply(kc, apiPath, marker)).status).toBe(201);
    await until(`${envoy.url}/marker`, 200);
    expect((await fetch(`${envoy.url}/elsewhere`)).status).toBe(403);
  });
});
