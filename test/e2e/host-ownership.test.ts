import { readFileSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNamespace, installCrds } from '../harness/crds.js';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { type Kube, startKube } from '../harness/kube.js';
import { getObject, serverSideApply } from '../harness/kubeHttp.js';
import { rawRequest } from '../harness/pathUpstreams.js';
import { waitUntil } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { startUpstream, type Upstream } from '../harness/upstream.js';

/**
 * Tenants cannot take each other's hosts: through a real API server, the built sidecar
 * watching every namespace, and real Envoy. The shop team's policy names shop.test first;
 * another namespace then claims the same host with a higher priority, a wildcard over it
 * and a policy without hosts: none of them decides a request for shop.test.
 */

const policyPath = (ns: string) => `/apis/nox.dev/v1alpha1/namespaces/${ns}/accesspolicies`;
const accessPolicy = (namespace: string, name: string, spec: object) => ({
  apiVersion: 'nox.dev/v1alpha1',
  kind: 'AccessPolicy',
  metadata: { name, namespace },
  spec,
});

describe('a host belongs to the namespace that claimed it first', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let upstream: Upstream;
  let sidecar: Sidecar;
  let envoy: Envoy;

  beforeAll(async () => {
    kube = await startKube();
    kc = kube.kubeConfig();
    await installCrds(kc);
    for (const ns of ['shop', 'attacker', 'platform']) await createNamespace(kc, ns);
    upstream = await startUpstream();
    sidecar = await startSidecar({
      policyPath: '',
      env: {
        NOX_CONFIG_SOURCE: 'kubernetes',
        NOX_KUBECONFIG: kube.kubeconfigPath,
        NOX_ANY_HOST_NAMESPACES: 'platform',
        NOX_CHECK_DEADLINE_MS: '2000',
      },
    });
    envoy = await startEnvoy({
      authzPort: sidecar.grpcPort,
      upstreamPort: upstream.port,
      authzTimeoutMs: 3000,
    });
  }, 180_000);
  afterAll(async () => {
    await envoy?.stop();
    await sidecar?.stop();
    await upstream?.close();
    await kube?.stop();
  });

  const get = (host: string, path: string) => rawRequest(envoy.port, 'GET', path, { host });
  const statusOf = async (host: string, path: string) => (await get(host, path)).status;

  it('keeps shop.test under the shop namespace’s policy whatever another namespace declares', async () => {
    const storefront = accessPolicy('shop', 'storefront', {
      match: { hosts: ['shop.test'] },
      rules: [{ name: 'no-admin', action: 'Deny', when: { paths: [{ value: '/admin' }] } }],
      defaultAction: 'Allow',
    });
    expect((await serverSideApply(kc, policyPath('shop'), storefront)).status).toBe(201);
    await waitUntil(
      'the storefront policy to decide',
      async () => (await statusOf('shop.test', '/')) === 200,
      10_000,
    );
    expect(await statusOf('shop.test', '/admin')).toBe(403);

    // Claimed first means an older creationTimestamp (one-second resolution): the next claim
    // must come at least a second later to be later, not a tie broken by name.
    const created = Date.parse(
      (
        (await getObject(kc, `${policyPath('shop')}/storefront`)) as {
          metadata: { creationTimestamp: string };
        }
      ).metadata.creationTimestamp,
    );
    await waitUntil('the next second', () => Date.now() >= created + 1000, 5000, { intervalMs: 50 });

    const grabs = [
      accessPolicy('attacker', 'same-host', {
        match: { hosts: ['shop.test', 'attacker.test'] },
        priority: 1000,
        defaultAction: 'Allow',
      }),
      accessPolicy('attacker', 'wildcard', {
        match: { hosts: ['*.test'] },
        priority: 1000,
        defaultAction: 'Allow',
      }),
      accessPolicy('attacker', 'every-host', { priority: 1000, defaultAction: 'Allow' }),
    ];
    for (const p of grabs) expect((await serverSideApply(kc, policyPath('attacker'), p)).status).toBe(201);
    // The signal that the sidecar has read them: the attacker's own host follows its policy.
    await waitUntil(
      'the attacker policies to be read',
      async () => (await statusOf('attacker.test', '/admin')) === 200,
      10_000,
    );

    const admin = await get('shop.test', '/admin');
    expect(admin.status).toBe(403);
    expect(JSON.parse(admin.body)).toMatchObject({ error: 'ACCESS_DENIED' });
    expect(JSON.parse(admin.body).reason).toContain('shop/storefront rule no-admin');
    // A subdomain nobody named exactly is the wildcard's; a host nobody claimed has no policy
    // (the attacker's policy without hosts applies nowhere).
    expect(await statusOf('other.test', '/admin')).toBe(200);
    const unclaimed = await get('nobody.example', '/');
    expect(unclaimed.status).toBe(403);
    expect(JSON.parse(unclaimed.body)).toMatchObject({ error: 'NO_POLICY' });

    const log = readFileSync(sidecar.service.logFile, 'utf8');
    expect(log).toContain('shop.test belongs to namespace shop (shop/storefront claimed it first)');
    expect(log).toContain('only the namespaces in NOX_ANY_HOST_NAMESPACES may do');
  });

  it('lets the platform namespace cover every host, within its paths and by priority', async () => {
    const guard = accessPolicy('platform', 'internal', {
      match: { paths: [{ value: '/internal' }] },
      priority: 1000,
      defaultAction: 'Deny',
    });
    expect((await serverSideApply(kc, policyPath('platform'), guard)).status).toBe(201);
    await waitUntil(
      'the platform policy to decide',
      async () => (await statusOf('shop.test', '/internal/x')) === 403,
      10_000,
    );
    expect(JSON.parse((await get('shop.test', '/internal')).body).reason).toContain('platform/internal');
    expect(await statusOf('shop.test', '/')).toBe(200);
    expect(await statusOf('shop.test', '/admin')).toBe(403);
  });
});
