import { request } from 'node:https';
import { CoreV1Api, type KubeConfig, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient } from '../../common/kube/client.js';
import { loadKubeConfig } from '../../common/kube/config.js';
import { createLogger } from '../../common/logger.js';
import type { AccessPolicySpec } from '../../common/resources/types.gen.js';
import { ApiKeyMethod } from '../../sidecar/identity/apiKeyMethod.js';
import { ServiceAccountMethod } from '../../sidecar/identity/serviceAccountMethod.js';
import { KubeSecretStore, type KubeSecretStoreOptions } from '../../sidecar/secrets/kubeSecretStore.js';
import { checkContext, checkInput, routedPolicy } from '../harness/checks.js';
import { apiServerRefuses, base64, etcdRequest, type Kube, startKube } from '../harness/kube.js';
import { testLog } from '../harness/log.js';
import { waitUntil } from '../harness/process.js';
import { metricSum } from '../harness/registry.js';

const log = createLogger('kube-identity-test', { level: process.env.NOX_LOG_LEVEL ?? 'silent' });
const API_AUDIENCE = 'https://api.nox.test';
const LABEL = { 'nox.dev/api-key': 'true' };

const input = (headers: Record<string, string>) => checkInput({ headers });
const ctx = () => checkContext();
const policy = (extra: Partial<AccessPolicySpec>) => routedPolicy(extra);

describe('identity from the Kubernetes API (real kube-apiserver)', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let core: CoreV1Api;
  const stores: KubeSecretStore[] = [];

  const putSecret = async (
    ns: string,
    name: string,
    data: Record<string, string>,
    labels: Record<string, string> = LABEL,
  ) => {
    const body = { metadata: { name, labels }, stringData: data };
    try {
      await core.createNamespacedSecret({ namespace: ns, body });
    } catch {
      await core.replaceNamespacedSecret({ name, namespace: ns, body });
    }
  };
  const startStore = async (opts: Partial<KubeSecretStoreOptions> = {}) => {
    const registry = new Registry();
    const store = new KubeSecretStore({
      client: new KubeClient(kc),
      namespaces: ['team-a', 'team-b'],
      log,
      registry,
      backoff: { initialMs: 100, maxMs: 1000 },
      ...opts,
    });
    stores.push(store);
    await store.start();
    return { store, registry };
  };
  /** The API server's own count of TokenReviews it has served. */
  const tokenReviews = async (): Promise<number> => {
    const opts: Parameters<typeof request>[1] = { method: 'GET' };
    await kc.applyToHTTPSOptions(opts);
    const text = await new Promise<string>((resolve, reject) => {
      const req = request(`${kube.server}/metrics`, opts, (res) => {
        let body = '';
        res.on('data', (c) => {
          body += c;
        });
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.end();
    });
    return text
      .split('\n')
      .filter(
        (l) =>
          l.startsWith('apiserver_request_total{') &&
          l.includes('resource="tokenreviews"') &&
          l.includes('verb="POST"'),
      )
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  };
  /** Empty audiences: the API server's own. */
  const saToken = async (ns: string, name: string, audiences: string[] = []) => {
    const r = await core.createNamespacedServiceAccountToken({
      name,
      namespace: ns,
      body: { spec: { expirationSeconds: 600, audiences } },
    });
    return r.status!.token;
  };

  beforeAll(async () => {
    kube = await startKube();
    kc = kube.kubeConfig();
    core = kc.makeApiClient(CoreV1Api);
    for (const name of ['team-a', 'team-b', 'elsewhere'])
      await core.createNamespace({ body: { metadata: { name } } });
    await putSecret('team-a', 'ci-bot', { key: 'ak_ci_bot_0001' });
    await putSecret('team-a', 'oauth', { 'client-secret': 's3cret' }, {});
    await putSecret('team-b', 'partner', { key: 'ak_partner_0002' });
    await putSecret('elsewhere', 'stranger', { key: 'ak_stranger_0003' });
    await core.createNamespacedSecret({
      namespace: 'team-a',
      body: {
        metadata: { name: 'sh.helm.release.v1.x.v1', labels: LABEL },
        type: 'helm.sh/release.v1',
        stringData: { release: 'big' },
      },
    });
  });
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.stop()));
    await kube?.stop();
  });

  describe('KubeSecretStore', () => {
    it('lists the Secrets of the namespaces it serves, and only those', async () => {
      const { store, registry } = await startStore();
      expect(store.get('team-a', 'oauth', 'client-secret')?.toString()).toBe('s3cret');
      expect(store.get('elsewhere', 'stranger', 'key')).toBeUndefined();
      expect([...store.select('team-a', LABEL).keys()]).toEqual(['ci-bot']); // the Helm release is never read
      expect([...store.select('team-b', LABEL).keys()]).toEqual(['partner']);
      expect(store.healthy()).toBe(true);
      expect(await metricSum(registry, 'nox_secrets_watch_healthy')).toBe(1);
    });

    it('sees a create, a change and a delete within seconds; a deleted API key stops working', async () => {
      const { store } = await startStore();
      const keys = new ApiKeyMethod(store);
      const p = policy({ apiKeys: { selector: LABEL, header: 'X-API-Key', key: 'key' } });
      const use = (key: string) => keys.identify(input({ 'x-api-key': key }), ctx(), p).kind;
      let changes = 0;
      store.onChange(() => changes++);

      await putSecret('team-a', 'temp', { key: 'ak_temp_0004' });
      const created = await waitUntil('new key accepted', () => use('ak_temp_0004') === 'identified', 2000, {
        intervalMs: 10,
      });
      await putSecret('team-a', 'temp', { key: 'ak_temp_0005' });
      const changed = await waitUntil(
        'rotated key accepted',
        () => use('ak_temp_0005') === 'identified',
        2000,
        { intervalMs: 10 },
      );
      expect(use('ak_temp_0004')).toBe('invalid');
      await core.deleteNamespacedSecret({ name: 'temp', namespace: 'team-a' });
      const deleted = await waitUntil('deleted key refused', () => use('ak_temp_0005') === 'invalid', 2000, {
        intervalMs: 10,
      });
      testLog(
        `api key via the API server: accepted ${created} ms, rotated ${changed} ms, refused ${deleted} ms after deletion`,
      );
      expect(changes).toBeGreaterThanOrEqual(3);
      expect(use('ak_ci_bot_0001')).toBe('identified');
      expect(use('ak_stranger_0003')).toBe('invalid');
    });

    it('keeps its Secrets through an API server restart and watches again after it', async () => {
      const { store, registry } = await startStore();
      const health = [store.healthy()];
      const poll = setInterval(() => {
        if (health.at(-1) !== store.healthy()) health.push(store.healthy());
      }, 10);
      const t0 = Date.now();
      await kube.restartApiServer();
      expect(store.get('team-a', 'oauth', 'client-secret')?.toString()).toBe('s3cret');
      await waitUntil('secret store healthy again', async () => store.healthy(), 30_000);
      clearInterval(poll);
      testLog(
        `secret store healthy again ${Date.now() - t0} ms after the restart began; health ${health.join(' → ')}`,
      );
      expect(health).toContain(false);
      expect(
        await metricSum(registry, 'nox_secrets_watch_restarts_total', { reason: 'error' }),
      ).toBeGreaterThan(0);
      await putSecret('team-a', 'oauth', { 'client-secret': 'rotated' }, {});
      await waitUntil(
        'change after restart',
        () => store.get('team-a', 'oauth', 'client-secret')?.toString() === 'rotated',
        2000,
        { intervalMs: 10 },
      );
    });

    it('relists on 410 Gone and so drops a Secret deleted while it could not watch', async () => {
      await putSecret('team-a', 'doomed', { key: 'ak_doomed_0006' });
      const { store, registry } = await startStore({ namespaces: ['team-a'] });
      expect(store.get('team-a', 'doomed', 'key')).toBeDefined();
      const t0 = Date.now();
      await kube.restartApiServer(async () => {
        // Deleted behind the API server's back, history compacted: only a relist can show it.
        expect(await apiServerRefuses(kube)).toBe(true);
        await waitUntil('the store to notice the outage', () => !store.healthy(), 30_000, { intervalMs: 10 });
        const del = await etcdRequest(kube, 'kv/deleterange', {
          key: base64('/registry/secrets/team-a/doomed'),
        });
        const revision = (del.header as { revision: string }).revision;
        await etcdRequest(kube, 'kv/compaction', { revision, physical: true });
      });
      await waitUntil(
        'doomed secret gone',
        () => store.get('team-a', 'doomed', 'key') === undefined,
        30_000,
        { intervalMs: 10 },
      );
      testLog(`secret deleted in etcd gone ${Date.now() - t0} ms after the restart began`);
      expect(
        await metricSum(registry, 'nox_secrets_watch_restarts_total', { reason: 'expired' }),
      ).toBeGreaterThan(0);
      expect(store.get('team-a', 'ci-bot', 'key')?.toString()).toBe('ak_ci_bot_0001');
    });

    it('start() rejects after startTimeoutMs when it may not list Secrets', async () => {
      const nobody = await loadKubeConfig(await kube.kubeconfigFor('nobody'));
      const t0 = Date.now();
      await expect(startStore({ client: new KubeClient(nobody), startTimeoutMs: 1500 })).rejects.toThrow(
        /HTTP 403/,
      );
      expect(Date.now() - t0).toBeLessThan(5000);
    });
  });

  describe('ServiceAccountMethod (TokenReview)', () => {
    beforeAll(async () => {
      for (const name of ['payments', 'reports', 'shortlived'])
        await core.createNamespacedServiceAccount({ namespace: 'team-a', body: { metadata: { name } } });
    });
    const saPolicy = (audiences?: string[]) => policy({ serviceAccounts: audiences ? { audiences } : {} });
    const bearer = (t: string) => input({ authorization: `Bearer ${t}` });

    it('identifies a ServiceAccount token, with the groups of the review, and reviews it only once', async () => {
      const method = new ServiceAccountMethod({ kubeConfig: kc });
      const token = await saToken('team-a', 'payments', [API_AUDIENCE]);
      const before = await tokenReviews();
      const results = await Promise.all(
        Array.from({ length: 40 }, () => method.identify(bearer(token), ctx(), saPolicy([API_AUDIENCE]))),
      );
      for (let i = 0; i < 10; i++)
        results.push(await method.identify(bearer(token), ctx(), saPolicy([API_AUDIENCE])));
      expect(await tokenReviews()).toBe(before + 1);
      expect(results.every((r) => r.kind === 'identified')).toBe(true);
      const r = results[0]!;
      if (r.kind !== 'identified') return;
      expect(r.identity).toMatchObject({
        subject: 'k8s:system:serviceaccount:team-a:payments',
        provider: 'k8s',
        method: 'serviceAccount',
        claims: { username: 'system:serviceaccount:team-a:payments', aud: [API_AUDIENCE] },
      });
      expect(r.identity.groups).toEqual(
        expect.arrayContaining([
          'system:serviceaccounts',
          'system:serviceaccounts:team-a',
          'system:authenticated',
        ]),
      );
    });

    it('accepts a token for the API server’s own audience when the policy names none', async () => {
      const method = new ServiceAccountMethod({ kubeConfig: kc });
      const r = await method.identify(bearer(await saToken('team-a', 'reports')), ctx(), saPolicy());
      expect(r.kind === 'identified' && r.identity.subject).toBe('k8s:system:serviceaccount:team-a:reports');
    });

    it('rejects a token bound to another audience, a forged one, and a deleted ServiceAccount’s', async () => {
      const method = new ServiceAccountMethod({ kubeConfig: kc, maxCacheMs: 100, negativeCacheMs: 100 });
      const other = await saToken('team-a', 'reports', ['https://someone-else.test']);
      expect((await method.identify(bearer(other), ctx(), saPolicy([API_AUDIENCE]))).kind).toBe('invalid');

      const [h, , s] = other.split('.');
      const claims = base64(
        JSON.stringify({ sub: 'system:serviceaccount:kube-system:admin', exp: 9e9 }),
      ).replace(/=+$/, '');
      expect((await method.identify(bearer(`${h}.${claims}.${s}`), ctx(), saPolicy())).kind).toBe('invalid');

      const token = await saToken('team-a', 'shortlived', [API_AUDIENCE]);
      await core.deleteNamespacedServiceAccount({ name: 'shortlived', namespace: 'team-a' });
      await waitUntil(
        'token of the deleted ServiceAccount rejected',
        async () =>
          (await method.identify(bearer(token), ctx(), saPolicy([API_AUDIENCE]))).kind === 'invalid',
        15_000,
      );
    });

    it('reviews a token again only after the cache period', async () => {
      const method = new ServiceAccountMethod({ kubeConfig: kc, maxCacheMs: 400 });
      const token = await saToken('team-a', 'payments', [API_AUDIENCE]);
      const use = async () => (await method.identify(bearer(token), ctx(), saPolicy([API_AUDIENCE]))).kind;
      const before = await tokenReviews();
      const cachedFrom = Date.now();
      expect(await use()).toBe('identified');
      expect(await use()).toBe('identified');
      expect(await tokenReviews()).toBe(before + 1);
      // The signal: a second review. It must not come before the cache period is over.
      await waitUntil(
        'a second TokenReview',
        async () => (await use()) === 'identified' && (await tokenReviews()) >= before + 2,
        5000,
        { intervalMs: 20 },
      );
      expect(Date.now() - cachedFrom).toBeGreaterThanOrEqual(400);
      expect(await tokenReviews()).toBe(before + 2);
    });

    it('never sends a token that is not a ServiceAccount JWT to the API server', async () => {
      const method = new ServiceAccountMethod({ kubeConfig: kc });
      const before = await tokenReviews();
      const notSa =
        `${base64('{"alg":"RS256"}')}.${base64('{"sub":"alice","iss":"https://sso.test"}')}.c2ln`.replace(
          /=/g,
          '',
        );
      for (const t of ['gho_opaque_github_token', notSa, 'a.b.c'])
        expect(await method.identify(bearer(t), ctx(), saPolicy())).toEqual({ kind: 'absent' });
      expect(await method.identify(input({}), ctx(), saPolicy())).toEqual({ kind: 'absent' });
      const token = await saToken('team-a', 'payments', [API_AUDIENCE]);
      expect(await method.identify(bearer(token), ctx(), policy({}))).toEqual({ kind: 'absent' });
      expect(await tokenReviews()).toBe(before);
    });

    it('is unavailable without RBAC for tokenreviews, and works once bound to system:auth-delegator', async () => {
      const sidecar = await loadKubeConfig(await kube.kubeconfigFor('nox-sidecar'));
      const token = await saToken('team-a', 'payments', [API_AUDIENCE]);
      const denied = await new ServiceAccountMethod({ kubeConfig: sidecar }).identify(
        bearer(token),
        ctx(),
        saPolicy([API_AUDIENCE]),
      );
      expect(denied.kind).toBe('unavailable');
      expect(String((denied as { cause: Error }).cause.message)).toBe('TokenReview failed: HTTP 403');
      await kc.makeApiClient(RbacAuthorizationV1Api).createClusterRoleBinding({
        body: {
          metadata: { name: 'nox-sidecar-auth-delegator' },
          roleRef: {
            apiGroup: 'rbac.authorization.k8s.io',
            kind: 'ClusterRole',
            name: 'system:auth-delegator',
          },
          subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'nox-sidecar' }],
        },
      });
      const method = new ServiceAccountMethod({ kubeConfig: sidecar });
      await waitUntil(
        'RBAC binding in force',
        async () =>
          (await method.identify(bearer(token), ctx(), saPolicy([API_AUDIENCE]))).kind === 'identified',
        10_000,
      );
    });
  });
});
