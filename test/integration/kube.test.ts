import {
  ApiException,
  AppsV1Api,
  CoreV1Api,
  KubeConfig,
  RbacAuthorizationV1Api,
  type User,
  type V1Pod,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { helm } from '../harness/helm.js';
import { type Kube, startKube } from '../harness/kube.js';
import { waitUntil } from '../harness/process.js';

/** The HTTP status of an API call: 200 when it succeeds, the ApiException code otherwise. */
async function statusOf(call: Promise<unknown>): Promise<number> {
  try {
    await call;
    return 200;
  } catch (e) {
    if (e instanceof ApiException) return e.code;
    throw e;
  }
}

/** The same cluster as `base`, as another user (certificate, token or impersonation). */
function asUser(base: KubeConfig, user: Omit<User, 'name'>): KubeConfig {
  const cluster = base.getCurrentCluster();
  if (!cluster) throw new Error('no current cluster');
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [cluster],
    users: [{ name: 'other', ...user }],
    contexts: [{ name: 'other', cluster: cluster.name, user: 'other' }],
    currentContext: 'other',
  });
  return kc;
}

describe('kube-apiserver and etcd', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let core: CoreV1Api;

  beforeAll(async () => {
    const t0 = Date.now();
    kube = await startKube();
    console.log(`apiserver ready in ${Date.now() - t0} ms at ${kube.server}`);
    kc = kube.kubeConfig();
    core = kc.makeApiClient(CoreV1Api);
  });
  afterAll(async () => {
    await kube?.stop();
  });

  it('stores and returns a namespace and a ConfigMap', async () => {
    await core.createNamespace({ body: { metadata: { name: 'nox-it', labels: { team: 'nox' } } } });
    const ns = await core.readNamespace({ name: 'nox-it' });
    expect(ns.metadata?.labels?.team).toBe('nox');
    expect(ns.status?.phase).toBe('Active');

    await core.createNamespacedConfigMap({
      namespace: 'nox-it',
      body: { metadata: { name: 'settings' }, data: { 'policy.yaml': 'denyPaths: [/admin]\n' } },
    });
    const cm = await core.readNamespacedConfigMap({ namespace: 'nox-it', name: 'settings' });
    expect(cm.data).toEqual({ 'policy.yaml': 'denyPaths: [/admin]\n' });
    expect(cm.metadata?.resourceVersion).toMatch(/^\d+$/);

    const list = await core.listNamespacedConfigMap({ namespace: 'nox-it' });
    // kube-root-ca.crt only appears with the controller-manager.
    expect(list.items.map((c) => c.metadata?.name)).toEqual(['settings']);
  });

  it('enforces validation and namespace lifecycle (a real apiserver, not a key-value store)', async () => {
    expect(
      await statusOf(
        core.createNamespacedConfigMap({ namespace: 'nox-it', body: { metadata: { name: 'Bad_Name' } } }),
      ),
    ).toBe(422);
    expect(
      await statusOf(
        core.createNamespacedConfigMap({ namespace: 'missing', body: { metadata: { name: 'x' } } }),
      ),
    ).toBe(404);
    // ClusterIP allocation from --service-cluster-ip-range.
    const svc = await core.createNamespacedService({
      namespace: 'nox-it',
      body: { metadata: { name: 'redis' }, spec: { ports: [{ port: 6379 }], selector: { app: 'redis' } } },
    });
    expect(svc.spec?.clusterIP).toMatch(/^10\.96\.0\.\d+$/);
  });

  it('denies what RBAC does not grant, to every kind of identity', async () => {
    const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
    await core.createNamespacedServiceAccount({
      namespace: 'nox-it',
      body: { metadata: { name: 'nobody' } },
    });

    // 1. Impersonating a ServiceAccount without roles.
    const admin = kc.getCurrentUser()!;
    const impersonated = asUser(kc, {
      certData: admin.certData,
      keyData: admin.keyData,
      impersonateUser: 'system:serviceaccount:nox-it:nobody',
    }).makeApiClient(CoreV1Api);
    // 2. A real ServiceAccount token (TokenRequest API, signed with the SA key).
    const tr = await core.createNamespacedServiceAccountToken({
      namespace: 'nox-it',
      name: 'nobody',
      body: { spec: { audiences: [], expirationSeconds: 600 } },
    });
    const token = tr.status?.token;
    expect(token).toMatch(/^ey/);
    const withToken = asUser(kc, { token }).makeApiClient(CoreV1Api);
    // 3. A client certificate for an ordinary user.
    const aliceConfig = new KubeConfig();
    aliceConfig.loadFromFile(await kube.kubeconfigFor('alice', ['developers']));
    const alice = aliceConfig.makeApiClient(CoreV1Api);

    for (const client of [impersonated, withToken, alice]) {
      expect(await statusOf(client.listNamespacedConfigMap({ namespace: 'nox-it' }))).toBe(403);
      expect(await statusOf(client.listNamespace())).toBe(403);
    }

    // A Role and RoleBinding open exactly "read ConfigMaps in nox-it" for the ServiceAccount.
    await rbac.createNamespacedRole({
      namespace: 'nox-it',
      body: {
        metadata: { name: 'read-config' },
        rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'watch'] }],
      },
    });
    await rbac.createNamespacedRoleBinding({
      namespace: 'nox-it',
      body: {
        metadata: { name: 'nobody-reads-config' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'read-config' },
        subjects: [{ kind: 'ServiceAccount', name: 'nobody', namespace: 'nox-it' }],
      },
    });
    for (const client of [impersonated, withToken]) {
      await waitUntil(
        'the RoleBinding to take effect',
        async () => (await statusOf(client.listNamespacedConfigMap({ namespace: 'nox-it' }))) === 200,
        10_000,
      );
      expect(
        await statusOf(
          client.createNamespacedConfigMap({ namespace: 'nox-it', body: { metadata: { name: 'nope' } } }),
        ),
      ).toBe(403);
      expect(await statusOf(client.listNamespacedSecret({ namespace: 'nox-it' }))).toBe(403);
    }
    // Alice is no ServiceAccount: still denied.
    expect(await statusOf(alice.listNamespacedConfigMap({ namespace: 'nox-it' }))).toBe(403);
  });

  it('keeps its data across an apiserver restart on the same port', async () => {
    const before = kube.server;
    const t0 = Date.now();
    await kube.restartApiServer();
    console.log(`apiserver restarted in ${Date.now() - t0} ms`);
    expect(kube.server).toBe(before);
    const cm = await core.readNamespacedConfigMap({ namespace: 'nox-it', name: 'settings' });
    expect(cm.data?.['policy.yaml']).toContain('/admin');
  });
});

describe('with kube-controller-manager', () => {
  let kube: Kube;
  let core: CoreV1Api;
  let apps: AppsV1Api;

  beforeAll(async () => {
    const t0 = Date.now();
    kube = await startKube({ controllerManager: true });
    console.log(`apiserver + controller-manager ready in ${Date.now() - t0} ms`);
    const kc = kube.kubeConfig();
    core = kc.makeApiClient(CoreV1Api);
    apps = kc.makeApiClient(AppsV1Api);
  });
  afterAll(async () => {
    await kube?.stop();
  });

  it('reconciles a Deployment into a ReplicaSet and Pending Pods, and garbage-collects them', async () => {
    await core.createNamespace({ body: { metadata: { name: 'workloads' } } });
    // The serviceaccount and root-ca publisher controllers fill every new namespace.
    await waitUntil(
      'default ServiceAccount and kube-root-ca.crt in the new namespace',
      async () =>
        (await statusOf(core.readNamespacedServiceAccount({ namespace: 'workloads', name: 'default' }))) ===
          200 &&
        (await statusOf(
          core.readNamespacedConfigMap({ namespace: 'workloads', name: 'kube-root-ca.crt' }),
        )) === 200,
      20_000,
    );
    const root = await core.readNamespacedConfigMap({ namespace: 'workloads', name: 'kube-root-ca.crt' });
    expect(root.data?.['ca.crt']).toBe(kube.caPem);

    const labels = { app: 'echo' };
    await apps.createNamespacedDeployment({
      namespace: 'workloads',
      body: {
        metadata: { name: 'echo' },
        spec: {
          replicas: 2,
          selector: { matchLabels: labels },
          template: {
            metadata: { labels },
            spec: { containers: [{ name: 'echo', image: 'registry.invalid/echo:1' }] },
          },
        },
      },
    });

    let pods: V1Pod[] = [];
    await waitUntil(
      'a ReplicaSet with 2 Pods',
      async () => {
        const rs = await apps.listNamespacedReplicaSet({ namespace: 'workloads', labelSelector: 'app=echo' });
        pods = (await core.listNamespacedPod({ namespace: 'workloads', labelSelector: 'app=echo' })).items;
        return rs.items.length === 1 && pods.length === 2;
      },
      30_000,
    );
    const [rs] = (await apps.listNamespacedReplicaSet({ namespace: 'workloads', labelSelector: 'app=echo' }))
      .items;
    expect(rs?.metadata?.ownerReferences?.[0]).toMatchObject({
      kind: 'Deployment',
      name: 'echo',
      controller: true,
    });
    expect(rs?.spec?.replicas).toBe(2);
    for (const pod of pods) {
      expect(pod.metadata?.ownerReferences?.[0]).toMatchObject({
        kind: 'ReplicaSet',
        name: rs?.metadata?.name,
      });
      // No scheduler, no kubelet.
      expect(pod.status?.phase).toBe('Pending');
      expect(pod.spec?.nodeName).toBeUndefined();
      // ServiceAccount admission mounted the projected token.
      expect(pod.spec?.serviceAccountName).toBe('default');
      expect(pod.spec?.volumes?.some((v) => v.name.startsWith('kube-api-access-'))).toBe(true);
    }
    await waitUntil(
      'the Deployment status',
      async () =>
        (await apps.readNamespacedDeployment({ namespace: 'workloads', name: 'echo' })).status?.replicas ===
        2,
      20_000,
    );

    // Scaling goes through the same controllers.
    await apps.patchNamespacedDeploymentScale({
      namespace: 'workloads',
      name: 'echo',
      body: [{ op: 'replace', path: '/spec/replicas', value: 3 }],
    });
    await waitUntil(
      '3 Pods',
      async () =>
        (await core.listNamespacedPod({ namespace: 'workloads', labelSelector: 'app=echo' })).items.length ===
        3,
      20_000,
    );

    // The garbage collector follows the owner references.
    await apps.deleteNamespacedDeployment({
      namespace: 'workloads',
      name: 'echo',
      propagationPolicy: 'Background',
    });
    await waitUntil(
      'the ReplicaSet and Pods to be garbage-collected',
      async () =>
        (await apps.listNamespacedReplicaSet({ namespace: 'workloads' })).items.length === 0 &&
        (await core.listNamespacedPod({ namespace: 'workloads' })).items.length === 0,
      30_000,
    );
  });

  it('installs charts/nox with helm into the cluster', async () => {
    const res = await helm(
      [
        'install',
        'nox',
        'charts/nox',
        '--namespace',
        'nox-system',
        '--create-namespace',
        '--wait',
        '--timeout',
        '60s',
      ],
      { kubeconfig: kube.kubeconfigPath },
    );
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain('STATUS: deployed');
    const cm = await core.readNamespacedConfigMap({ namespace: 'nox-system', name: 'nox-sidecar' });
    expect(cm.data?.NOX_GRPC_PORT).toBe('9001');
    const sa = await core.readNamespacedServiceAccount({ namespace: 'nox-system', name: 'nox' });
    expect(sa.metadata?.labels?.['app.kubernetes.io/managed-by']).toBe('Helm');

    const manifest = await helm(['get', 'manifest', 'nox', '--namespace', 'nox-system'], {
      kubeconfig: kube.kubeconfigPath,
    });
    const kinds = parseAllDocuments(manifest.stdout)
      .map((d) => d.toJS() as { kind?: string } | null)
      .filter((o) => o !== null)
      .map((o) => o.kind)
      .sort();
    expect(kinds).toEqual(['ConfigMap', 'ServiceAccount']);

    const un = await helm(['uninstall', 'nox', '--namespace', 'nox-system', '--wait'], {
      kubeconfig: kube.kubeconfigPath,
    });
    expect(un.code, un.stderr).toBe(0);
    expect(
      await statusOf(core.readNamespacedConfigMap({ namespace: 'nox-system', name: 'nox-sidecar' })),
    ).toBe(404);
  });
});
