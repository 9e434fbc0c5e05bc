import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ApiException,
  AppsV1Api,
  AuthenticationV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  RbacAuthorizationV1Api,
  type User,
  type V1Pod,
  Watch,
} from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { KubeClient } from '../../common/kube/client.js';
import { loadKubeConfig } from '../../common/kube/config.js';
import { createLogger } from '../../common/logger.js';
import { sidecarKinds } from '../../sidecar/config/kinds.js';
import { KubeSource } from '../../sidecar/config/kubeSource.js';
import type { SourceState } from '../../sidecar/config/source.js';
import { sidecarRbac } from '../../sidecar/rbac.js';
import { KubeSecretStore } from '../../sidecar/secrets/kubeSecretStore.js';
import { installCrds } from '../harness/crds.js';
import { chartWithGatewayPod, helm } from '../harness/helm.js';
import { type Kube, startKube } from '../harness/kube.js';
import { testLog } from '../harness/log.js';
import { waitUntil } from '../harness/process.js';
import { repoRoot } from '../harness/tools.js';

const demoAccessPolicy = readFileSync(join(repoRoot, 'examples', 'demo', 'access.yaml'), 'utf8');

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
    testLog(`apiserver ready in ${Date.now() - t0} ms at ${kube.server}`);
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

    // What the chart's ConfigMap holds for the files source: settings and a manifest.
    const data = { NOX_CONFIG_SOURCE: 'files', 'policies.yaml': demoAccessPolicy };
    await core.createNamespacedConfigMap({
      namespace: 'nox-it',
      body: { metadata: { name: 'settings' }, data },
    });
    const cm = await core.readNamespacedConfigMap({ namespace: 'nox-it', name: 'settings' });
    expect(cm.data).toEqual(data);
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
    expect(svc.spec?.clusterIP).toMatch(/^127\.\d+\.\d+\.\d+$/);
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
    const aliceConfig = await loadKubeConfig(await kube.kubeconfigFor('alice', ['developers']));
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
    testLog(`apiserver restarted in ${Date.now() - t0} ms`);
    expect(kube.server).toBe(before);
    const cm = await core.readNamespacedConfigMap({ namespace: 'nox-it', name: 'settings' });
    expect(cm.data?.['policies.yaml']).toBe(demoAccessPolicy);
  });
});

describe('with kube-controller-manager', () => {
  let kube: Kube;
  let core: CoreV1Api;
  let apps: AppsV1Api;

  beforeAll(async () => {
    const t0 = Date.now();
    kube = await startKube({ controllerManager: true });
    testLog(`apiserver + controller-manager ready in ${Date.now() - t0} ms`);
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
        // No --wait: the operator Deployment's pods cannot run here (there is no kubelet for
        // the nox image); what is under test is that the API server takes every object.
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
    // Defaults: the ext_authz service on the kubernetes source over all namespaces
    // (Deployment, Service, PDB, cluster-wide read RBAC), and the operator (Deployment,
    // metrics Service, PDB, ServiceAccount, its ClusterRole and the Lease Role in its own
    // namespace). The helm test Pod is a hook, not part of the manifest.
    expect(kinds).toEqual([
      'ClusterRole',
      'ClusterRole',
      'ClusterRole',
      'ClusterRoleBinding',
      'ClusterRoleBinding',
      'ClusterRoleBinding',
      'ConfigMap',
      'Deployment',
      'Deployment',
      'PodDisruptionBudget',
      'PodDisruptionBudget',
      'Role',
      'RoleBinding',
      'Service',
      'Service',
      'ServiceAccount',
      'ServiceAccount',
    ]);

    const un = await helm(['uninstall', 'nox', '--namespace', 'nox-system', '--wait'], {
      kubeconfig: kube.kubeconfigPath,
    });
    expect(un.code, un.stderr).toBe(0);
    expect(
      await statusOf(core.readNamespacedConfigMap({ namespace: 'nox-system', name: 'nox-sidecar' })),
    ).toBe(404);
  });
});

/** Opens a watch as `kc`'s user: the HTTP status, and the first event when the server streams one. */
async function watchOnce(kc: KubeConfig, path: string): Promise<{ status: number; first?: string }> {
  return new Promise((resolve, reject) => {
    let controller: AbortController | undefined;
    let settled = false;
    const finish = (r: { status: number; first?: string }) => {
      if (settled) return;
      settled = true;
      controller?.abort();
      resolve(r);
    };
    new Watch(kc)
      .watch(
        path,
        { timeoutSeconds: 5 },
        (type, obj: { metadata?: { namespace?: string; name?: string } }) =>
          finish({ status: 200, first: `${type} ${obj.metadata?.namespace}/${obj.metadata?.name}` }),
        (err: (Error & { statusCode?: number }) | null) =>
          finish({ status: err ? (err.statusCode ?? 0) : 200 }),
      )
      .then((c) => {
        controller = c;
        if (settled) c.abort();
      }, reject);
  });
}

/** "group/resource:verb" for each permission a set of rules grants. */
function permissions(
  rules: readonly {
    apiGroups?: readonly string[];
    resources?: readonly string[];
    verbs: readonly string[];
  }[],
): string[] {
  return rules
    .flatMap((r) =>
      (r.apiGroups ?? []).flatMap((g) =>
        (r.resources ?? []).flatMap((res) => r.verbs.map((v) => `${g}/${res}:${v}`)),
      ),
    )
    .sort();
}

describe("the sidecar's RBAC from charts/nox, as its ServiceAccount, against a real API server", () => {
  const log = createLogger('kube-rbac-test', { level: process.env.NOX_LOG_LEVEL ?? 'silent' });
  let kube: Kube;
  let kc: KubeConfig;
  let core: CoreV1Api;
  let custom: CustomObjectsApi;
  const group = 'nox.dev';
  const version = 'v1alpha1';
  const plural = 'accesspolicies';
  const accessPolicy = parse(demoAccessPolicy) as { metadata: { name: string } };

  /** A kubeconfig holding a real token of the release's ServiceAccount (TokenRequest API). */
  const sidecarIdentity = async (namespace: string, name: string): Promise<KubeConfig> => {
    const tr = await core.createNamespacedServiceAccountToken({
      namespace,
      name,
      body: { spec: { audiences: [], expirationSeconds: 600 } },
    });
    return asUser(kc, { token: tr.status?.token });
  };
  const install = async (namespace: string, args: string[]) => {
    const t0 = Date.now();
    // The CRDs come from crds/ through the harness: what is under test here is the RBAC.
    const res = await helm(
      [
        'install',
        'nox',
        'charts/nox',
        '--namespace',
        namespace,
        '--create-namespace',
        '--skip-crds',
        '--wait',
        '--timeout',
        '60s',
        // The sidecar's RBAC is under test; the operator's and the ext_authz Deployments could
        // not become ready here (no kubelet: test/cluster/ runs them on a real node).
        '--set',
        'operator.enabled=false',
        '--set',
        'authz.enabled=false',
        ...args,
      ],
      { kubeconfig: kube.kubeconfigPath },
    );
    expect(res.code, res.stderr).toBe(0);
    testLog(`helm install in ${namespace} took ${Date.now() - t0} ms`);
    return res;
  };
  /** The permissions SelfSubjectRulesReview reports in a namespace, less what every authenticated user has. */
  const granted = async (as: KubeConfig, namespace: string): Promise<string[]> => {
    const review = await as.makeApiClient(AuthorizationV1Api).createSelfSubjectRulesReview({
      body: { spec: { namespace } },
    });
    expect(review.status?.incomplete).toBe(false);
    return permissions(review.status?.resourceRules ?? []).filter(
      (p) => !/^authorization\.k8s\.io\/selfsubject|^authentication\.k8s\.io\/selfsubject/.test(p),
    );
  };
  const writesAreRefused = async (as: KubeConfig, namespace: string) => {
    const api = as.makeApiClient(CustomObjectsApi);
    const admin = await custom.getNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      name: accessPolicy.metadata.name,
    });
    const target = { group, version, namespace, plural, name: accessPolicy.metadata.name };
    expect(
      await statusOf(
        api.createNamespacedCustomObject({
          group,
          version,
          namespace,
          plural,
          body: { ...accessPolicy, metadata: { name: 'forged' } },
        }),
      ),
    ).toBe(403);
    expect(await statusOf(api.replaceNamespacedCustomObject({ ...target, body: admin }))).toBe(403);
    expect(
      await statusOf(
        api.patchNamespacedCustomObject({
          ...target,
          body: [{ op: 'replace', path: '/spec/defaultAction', value: 'Allow' }],
        }),
      ),
    ).toBe(403);
    expect(await statusOf(api.deleteNamespacedCustomObject(target))).toBe(403);
    expect(
      await statusOf(api.deleteCollectionNamespacedCustomObject({ group, version, namespace, plural })),
    ).toBe(403);
    const coreAs = as.makeApiClient(CoreV1Api);
    expect(
      await statusOf(
        coreAs.createNamespacedSecret({
          namespace,
          body: { metadata: { name: 'forged' }, stringData: { a: 'b' } },
        }),
      ),
    ).toBe(403);
    expect(await statusOf(coreAs.deleteNamespacedSecret({ namespace, name: 'app' }))).toBe(403);
    // ConfigMaps (the model ones: risk/kubeModelStore.ts) are read, never written.
    expect(
      await statusOf(coreAs.createNamespacedConfigMap({ namespace, body: { metadata: { name: 'forged' } } })),
    ).toBe(403);
    // Nothing else is readable.
    expect(await statusOf(coreAs.listNamespacedPod({ namespace }))).toBe(403);
  };
  const tokenReviewWorks = async (as: KubeConfig) => {
    const other = await sidecarIdentity('team-a', 'client');
    const review = await as.makeApiClient(AuthenticationV1Api).createTokenReview({
      body: { spec: { token: other.getCurrentUser()?.token ?? '' } },
    });
    expect(review.status?.authenticated).toBe(true);
    expect(review.status?.user?.username).toBe('system:serviceaccount:team-a:client');
  };

  beforeAll(async () => {
    const t0 = Date.now();
    kube = await startKube();
    kc = kube.kubeConfig();
    core = kc.makeApiClient(CoreV1Api);
    custom = kc.makeApiClient(CustomObjectsApi);
    await installCrds(kc);
    // Right after a CRD is established its storage may still answer 429 "storage is
    // (re)initializing" or drop the connection: wait until every kind the sidecar reads is
    // served, so that each status below is the authorizer's answer.
    for (const kind of sidecarKinds)
      await waitUntil(
        `${kind.plural} served`,
        async () =>
          (await statusOf(custom.listClusterCustomObject({ group, version, plural: kind.plural })).catch(
            () => 0,
          )) === 200,
        15_000,
      );
    for (const ns of ['team-a', 'team-b']) {
      await core.createNamespace({ body: { metadata: { name: ns } } });
      await custom.createNamespacedCustomObject({
        group,
        version,
        namespace: ns,
        plural,
        body: accessPolicy,
      });
      await core.createNamespacedSecret({
        namespace: ns,
        body: { metadata: { name: 'app' }, stringData: { 'client-secret': `secret-of-${ns}` } },
      });
    }
    await core.createNamespacedServiceAccount({
      namespace: 'team-a',
      body: { metadata: { name: 'client' } },
    });
    testLog(`apiserver with CRDs, namespaces, policies and Secrets in ${Date.now() - t0} ms`);
  });
  afterAll(async () => {
    await kube?.stop();
  });

  it('watched namespaces: reads policies and Secrets there, nothing elsewhere, writes nothing', async () => {
    const res = await install('nox-a', ['--set-json', 'sidecar.watchNamespaces=["team-a"]']);
    // NOTES.txt: what the sidecar reads, and the container to add to the gateway's pod.
    expect(res.stdout).toMatch(/policies: +nox\.dev resources in namespaces team-a \(list \+ watch\)/);
    expect(res.stdout).toContain('    - name: nox-authz\n');
    expect(res.stdout).toContain('name: nox-sidecar\n');
    const sidecar = await sidecarIdentity('nox-a', 'nox');
    const api = sidecar.makeApiClient(CustomObjectsApi);
    const coreAs = sidecar.makeApiClient(CoreV1Api);

    // What the sidecar does: list + watch policies, get Secrets, in the watched namespace.
    await waitUntil(
      'the RoleBinding to take effect',
      async () =>
        (await statusOf(api.listNamespacedCustomObject({ group, version, namespace: 'team-a', plural }))) ===
        200,
      10_000,
    );
    const list = (await api.listNamespacedCustomObject({ group, version, namespace: 'team-a', plural })) as {
      items: { metadata: { name: string } }[];
    };
    expect(list.items.map((i) => i.metadata.name)).toEqual([accessPolicy.metadata.name]);
    expect(await watchOnce(sidecar, `/apis/${group}/${version}/namespaces/team-a/${plural}`)).toEqual({
      status: 200,
      first: `ADDED team-a/${accessPolicy.metadata.name}`,
    });
    for (const kind of sidecarKinds)
      expect(
        await statusOf(
          api.listNamespacedCustomObject({ group, version, namespace: 'team-a', plural: kind.plural }),
        ),
        kind.plural,
      ).toBe(200);
    const secret = await coreAs.readNamespacedSecret({ namespace: 'team-a', name: 'app' });
    expect(Buffer.from(secret.data?.['client-secret'] ?? '', 'base64').toString()).toBe('secret-of-team-a');
    expect(await statusOf(coreAs.listNamespacedSecret({ namespace: 'team-a' }))).toBe(200);
    expect((await watchOnce(sidecar, '/api/v1/namespaces/team-a/secrets')).status).toBe(200);
    await tokenReviewWorks(sidecar);

    // Nothing in a namespace it does not watch, its own included, nor across all namespaces.
    for (const ns of ['team-b', 'nox-a']) {
      expect(await statusOf(coreAs.readNamespacedSecret({ namespace: ns, name: 'app' })), ns).toBe(403);
      expect(await statusOf(coreAs.listNamespacedSecret({ namespace: ns })), ns).toBe(403);
      expect(
        await statusOf(api.listNamespacedCustomObject({ group, version, namespace: ns, plural })),
        ns,
      ).toBe(403);
    }
    expect((await watchOnce(sidecar, '/api/v1/namespaces/team-b/secrets')).status).toBe(403);
    expect(await statusOf(coreAs.listSecretForAllNamespaces())).toBe(403);
    expect(await statusOf(api.listClusterCustomObject({ group, version, plural }))).toBe(403);
    await writesAreRefused(sidecar, 'team-a');

    // The whole grant, as the API server sees it: the generated rules and nothing more.
    expect(await granted(sidecar, 'team-a')).toEqual(
      permissions([...sidecarRbac.namespaced, ...sidecarRbac.cluster]),
    );
    expect(await granted(sidecar, 'team-b')).toEqual(permissions(sidecarRbac.cluster));

    // And it is enough for the sidecar's own code: its policy source and Secret store start
    // with exactly this identity and see team-a only.
    const source = new KubeSource({
      client: new KubeClient(sidecar),
      kinds: sidecarKinds,
      namespaces: ['team-a'],
      log,
      registry: new Registry(),
      startTimeoutMs: 15_000,
    });
    let state: SourceState | undefined;
    await source.start((s) => {
      state = s;
    });
    await source.stop();
    expect(state?.resources.map((r) => `${r.kind} ${r.metadata.namespace}/${r.metadata.name}`)).toEqual([
      `AccessPolicy team-a/${accessPolicy.metadata.name}`,
    ]);
    const secrets = new KubeSecretStore({
      client: new KubeClient(sidecar),
      namespaces: ['team-a'],
      log,
      registry: new Registry(),
      startTimeoutMs: 15_000,
    });
    await secrets.start();
    expect(secrets.get('team-a', 'app', 'client-secret')?.toString()).toBe('secret-of-team-a');
    expect(secrets.get('team-b', 'app', 'client-secret')).toBeUndefined();
    await secrets.stop();
  });

  it('all namespaces: reads policies and Secrets cluster-wide, still writes nothing', async () => {
    // Same release name in another namespace: the cluster-scoped objects must not collide.
    await install('nox-b', []);
    const sidecar = await sidecarIdentity('nox-b', 'nox');
    const api = sidecar.makeApiClient(CustomObjectsApi);
    const coreAs = sidecar.makeApiClient(CoreV1Api);
    await waitUntil(
      'the ClusterRoleBinding to take effect',
      async () => (await statusOf(api.listClusterCustomObject({ group, version, plural }))) === 200,
      10_000,
    );
    const all = (await api.listClusterCustomObject({ group, version, plural })) as {
      items: { metadata: { namespace: string } }[];
    };
    expect(all.items.map((i) => i.metadata.namespace).sort()).toEqual(['team-a', 'team-b']);
    expect((await watchOnce(sidecar, `/apis/${group}/${version}/${plural}`)).status).toBe(200);
    expect(await statusOf(coreAs.readNamespacedSecret({ namespace: 'team-b', name: 'app' }))).toBe(200);
    expect(await statusOf(coreAs.listSecretForAllNamespaces())).toBe(200);
    await tokenReviewWorks(sidecar);
    await writesAreRefused(sidecar, 'team-b');
    for (const ns of ['team-a', 'team-b', 'kube-system'])
      expect(await granted(sidecar, ns), ns).toEqual(
        permissions([...sidecarRbac.namespaced, ...sidecarRbac.cluster]),
      );

    const source = new KubeSource({
      client: new KubeClient(sidecar),
      kinds: sidecarKinds,
      namespaces: [],
      log,
      registry: new Registry(),
      startTimeoutMs: 15_000,
    });
    let state: SourceState | undefined;
    await source.start((s) => {
      state = s;
    });
    await source.stop();
    expect(state?.resources.map((r) => r.metadata.namespace).sort()).toEqual(['team-a', 'team-b']);

    // The first release's sidecar is unaffected by the second's grant...
    const first = await sidecarIdentity('nox-a', 'nox');
    expect(
      await statusOf(
        first.makeApiClient(CoreV1Api).readNamespacedSecret({ namespace: 'team-b', name: 'app' }),
      ),
    ).toBe(403);
    // ...and loses its rights with its release.
    const un = await helm(['uninstall', 'nox', '--namespace', 'nox-a', '--wait'], {
      kubeconfig: kube.kubeconfigPath,
    });
    expect(un.code, un.stderr).toBe(0);
    await waitUntil(
      'the RoleBinding to be gone',
      async () =>
        (await statusOf(first.makeApiClient(CoreV1Api).listNamespacedSecret({ namespace: 'team-a' }))) ===
        403,
      10_000,
    );
    expect(await statusOf(coreAs.listNamespacedSecret({ namespace: 'team-a' }))).toBe(200);
  });

  it("accepts the chart's sidecar container as a Pod (server-side dry run)", async () => {
    // The chart ships the container as a named template (NOTES.txt prints it); a copy of the
    // chart renders it into a Pod, with every Secret reference and mount in use.
    const dir = chartWithGatewayPod();
    const res = await helm([
      'template',
      'nox',
      dir,
      '--namespace',
      'nox-b',
      '--show-only',
      'templates/zz-test-pod.yaml',
      '--set',
      'sidecar.configSource=files',
      '--set',
      'sidecar.quotaStore=redis',
      '--set',
      'sidecar.redisNodes={redis:6379}',
      '--set',
      'sidecar.redisPasswordSecret.name=redis-auth',
      '--set',
      'sidecar.databaseUrlSecret.name=pg-app',
      '--set-json',
      'sidecar.policySecrets=[{"name":"github-client"},{"name":"keys","namespace":"team-a"}]',
    ]);
    expect(res.code, res.stderr).toBe(0);
    const pod = parse(res.stdout) as V1Pod;
    const created = await core.createNamespacedPod({ namespace: 'nox-b', body: pod, dryRun: 'All' });
    const env = (name: string) => created.spec?.containers[0]?.env?.find((e) => e.name === name);
    expect(env('NOX_DATABASE_URL')?.valueFrom?.secretKeyRef).toEqual({ name: 'pg-app', key: 'url' });
    expect(env('POD_NAME')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.name');
    expect(created.spec?.volumes?.map((v) => v.name)).toEqual(
      expect.arrayContaining([
        'nox-audit-spool',
        'nox-policies',
        'nox-redis-password',
        'nox-policy-secret-0',
        'nox-policy-secret-1',
      ]),
    );
  });
});
