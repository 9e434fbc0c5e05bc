import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { policyKinds } from '../../common/resources/kinds/index.js';
import { validateResource } from '../../common/resources/validate.js';
import { operatorRbac } from '../../operator/rbac.js';
import {
  loadSettings as loadOperatorSettings,
  definitions as operatorDefinitions,
} from '../../operator/settings.js';
import { sidecarRbac } from '../../sidecar/rbac.js';
import { definitions, loadSettings } from '../../sidecar/settings/settings.js';
import { chartWithGatewayPod, helm } from '../harness/helm.js';
import { scratchDir } from '../harness/process.js';
import { repoRoot } from '../harness/tools.js';

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  data?: Record<string, string>;
  automountServiceAccountToken?: boolean;
  rules?: unknown[];
  roleRef?: { apiGroup: string; kind: string; name: string };
  subjects?: { kind: string; name: string; namespace?: string }[];
  spec?: Record<string, unknown>;
}

interface Container {
  name: string;
  envFrom?: { configMapRef?: { name: string } }[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  readinessProbe?: unknown;
}
interface Volume {
  name: string;
  configMap?: { name: string; items?: { key: string; path: string }[] };
  secret?: { secretName: string; items?: { key: string; path: string }[] };
}

const chartDir = join(repoRoot, 'charts', 'nox');

function parseObjects(yaml: string): K8sObject[] {
  const docs = parseAllDocuments(yaml);
  for (const d of docs) expect(d.errors, String(d.errors)).toEqual([]);
  return docs.map((d) => d.toJS() as K8sObject | null).filter((o): o is K8sObject => o !== null);
}

/** `helm template` → the objects it renders (the YAML is parsed, not grepped). */
async function render(release: string, args: string[] = [], chart = 'charts/nox'): Promise<K8sObject[]> {
  const res = await helm(['template', release, chart, '--namespace', 'nox-system', ...args]);
  expect(res.code, res.stderr).toBe(0);
  return parseObjects(res.stdout);
}

/** Values as a file (`-f`): manifests and lists read better as YAML than as --set. */
function valuesFile(values: unknown): string {
  const path = join(scratchDir('helm-values'), 'values.yaml');
  writeFileSync(path, JSON.stringify(values));
  return path;
}

/** The sidecar container (envFrom, Secret env, mounts) rendered into a Pod (see chartWithGatewayPod). */
async function renderPod(args: string[]): Promise<{ pod: K8sObject; objects: K8sObject[] }> {
  const dir = chartWithGatewayPod();
  const objects = await render('demo', args, dir);
  return { pod: find(objects, 'Pod', 'gateway'), objects };
}

function find(objects: K8sObject[], kind: string, name: string): K8sObject {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o)
    throw new Error(`no ${kind} ${name} in ${objects.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return o;
}
const ids = (objects: K8sObject[]) =>
  objects
    .map((o) => `${o.kind}/${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`)
    .sort();
const rbacKinds = new Set(['Role', 'RoleBinding', 'ClusterRole', 'ClusterRoleBinding']);
/** The objects of one part of the chart (the app.kubernetes.io/component label). */
const ofComponent = (objects: K8sObject[], component: 'sidecar' | 'operator' | 'authz' | 'test') =>
  objects.filter((o) => o.metadata.labels?.['app.kubernetes.io/component'] === component);

/** The example manifests the demo runs, as a user would list them in sidecar.policies. */
const demoPolicies = readdirSync(join(repoRoot, 'examples', 'demo'))
  .filter((f) => f.endsWith('.yaml'))
  .sort()
  .flatMap((f) =>
    parseAllDocuments(readFileSync(join(repoRoot, 'examples', 'demo', f), 'utf8')).map(
      (d) => d.toJS() as Record<string, unknown>,
    ),
  );

/** A value for every operator option, none of them its default. */
const everyOperatorOption = {
  enabled: true,
  replicas: 3,
  watchNamespaces: ['team-a', 'team-b', 'team-a'],
  httpPort: 8080,
  leaseName: 'nox-leader',
  logLevel: 'debug',
  resources: { requests: { cpu: '250m', memory: '256Mi' }, limits: { cpu: 1, memory: '1Gi' } },
  nodeSelector: { 'kubernetes.io/os': 'linux' },
  tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'control', effect: 'NoSchedule' }],
  affinity: {
    podAntiAffinity: {
      preferredDuringSchedulingIgnoredDuringExecution: [
        {
          weight: 100,
          podAffinityTerm: {
            topologyKey: 'kubernetes.io/hostname',
            labelSelector: { matchLabels: { 'app.kubernetes.io/component': 'operator' } },
          },
        },
      ],
    },
  },
  podAnnotations: { 'prometheus.io/scrape': 'true' },
};

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}
interface OperatorPodSpec {
  serviceAccountName: string;
  automountServiceAccountToken?: boolean;
  securityContext?: Record<string, unknown>;
  hostNetwork?: boolean;
  hostPID?: boolean;
  hostIPC?: boolean;
  volumes?: unknown[];
  nodeSelector?: unknown;
  tolerations?: unknown;
  affinity?: unknown;
  containers: {
    name: string;
    image: string;
    command?: string[];
    args?: string[];
    env: EnvVar[];
    ports: { name: string; containerPort: number }[];
    livenessProbe?: { httpGet?: { path: string; port: string } };
    readinessProbe?: { httpGet?: { path: string; port: string } };
    resources?: unknown;
    securityContext?: Record<string, unknown>;
  }[];
}
interface OperatorDeployment {
  replicas: number;
  selector: { matchLabels: Record<string, string> };
  template: {
    metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
    spec: OperatorPodSpec;
  };
}

/** The operator's Deployment spec and its one container. */
function operatorDeployment(objects: K8sObject[], name = 'demo-nox-operator') {
  const spec = find(objects, 'Deployment', name).spec as unknown as OperatorDeployment;
  expect(spec.template.spec.containers).toHaveLength(1);
  return { spec, pod: spec.template.spec, container: spec.template.spec.containers[0]! };
}

/** The container's environment as the pod in namespace nox-system named demo-nox-operator-abc would see it. */
function resolvedEnv(env: EnvVar[]): Record<string, string> {
  const fields: Record<string, string> = {
    'metadata.namespace': 'nox-system',
    'metadata.name': 'demo-nox-operator-abc',
  };
  return Object.fromEntries(
    env.map((e) => {
      const field = e.valueFrom?.fieldRef?.fieldPath;
      if (field !== undefined) {
        expect(fields[field], `${e.name}: fieldRef ${field}`).toBeDefined();
        return [e.name, fields[field]!];
      }
      expect(e.value, e.name).toBeDefined();
      return [e.name, e.value!];
    }),
  );
}

/** Every NOX_* setting the chart sets through its ConfigMap: all but the Secret and the dev-only one. */
const configMapSettings = Object.values(definitions)
  .map((d) => d.env)
  // The database URL comes from a Secret, the pod name from the downward API.
  .filter((env) => env !== 'NOX_DATABASE_URL' && env !== 'NOX_KUBECONFIG' && env !== 'POD_NAME')
  .sort();

describe('charts/nox', () => {
  it('passes helm lint --strict, with the defaults and with every option set', async () => {
    const all = valuesFile({
      sidecar: {
        configSource: 'files',
        policies: demoPolicies,
        quotaStore: 'redis-cluster',
        redisNodes: ['redis-0.redis:6379'],
        redisPasswordSecret: { name: 'redis-auth', key: 'password' },
        databaseUrlSecret: { name: 'pg-app', key: 'uri' },
      },
      operator: everyOperatorOption,
    });
    for (const args of [
      [],
      ['-f', all],
      ['--set-json', 'sidecar.watchNamespaces=["team-a"]'],
      ['--set', 'operator.enabled=false'],
      ['--set', 'operator.replicas=1'],
    ]) {
      const res = await helm(['lint', '--strict', 'charts/nox', ...args]);
      expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
      expect(res.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
      expect(res.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
    }
  });

  it('has the chart metadata the release expects', async () => {
    const res = await helm(['show', 'chart', 'charts/nox']);
    expect(res.code, res.stderr).toBe(0);
    expect(parse(res.stdout)).toMatchObject({
      apiVersion: 'v2',
      name: 'nox',
      version: '0.1.0',
      appVersion: '0.1.0',
    });
  });

  it('renders the ServiceAccount, the ConfigMap and cluster-wide read RBAC with the default values', async () => {
    const objects = await render('demo');
    expect(ids(ofComponent(objects, 'sidecar'))).toEqual([
      'ClusterRole/nox-system:demo-nox-sidecar-policies',
      'ClusterRole/nox-system:demo-nox-sidecar-tokenreview',
      'ClusterRoleBinding/nox-system:demo-nox-sidecar-policies',
      'ClusterRoleBinding/nox-system:demo-nox-sidecar-tokenreview',
      'ConfigMap/nox-system/demo-nox-sidecar',
      'ServiceAccount/nox-system/demo-nox',
    ]);
    // Everything else is the operator's, or the ext_authz service's and its helm test's (helm-authz.test.ts).
    expect(
      ofComponent(objects, 'operator').length +
        ofComponent(objects, 'sidecar').length +
        ofComponent(objects, 'authz').length +
        ofComponent(objects, 'test').length,
    ).toBe(objects.length);
    for (const o of objects) {
      expect(o.metadata.labels).toMatchObject({
        'app.kubernetes.io/name': 'nox',
        'app.kubernetes.io/instance': 'demo',
        'app.kubernetes.io/version': '0.1.0',
        'app.kubernetes.io/managed-by': 'Helm',
        'app.kubernetes.io/part-of': 'nox',
        'helm.sh/chart': 'nox-0.1.0',
      });
    }
    expect(find(objects, 'ServiceAccount', 'demo-nox').automountServiceAccountToken).toBe(true);

    const cm = find(objects, 'ConfigMap', 'demo-nox-sidecar');
    expect(cm.data).toEqual({
      NOX_GRPC_HOST: '127.0.0.1',
      NOX_GRPC_PORT: '9001',
      NOX_HTTP_HOST: '0.0.0.0',
      NOX_HTTP_PORT: '9002',
      NOX_CONFIG_SOURCE: 'kubernetes',
      NOX_POLICY_PATH: '',
      NOX_WATCH_NAMESPACES: '',
      // Only the release namespace's AccessPolicies may cover every host.
      NOX_ANY_HOST_NAMESPACES: 'nox-system',
      NOX_SECRETS_DIR: '',
      NOX_QUOTA_STORE: 'memory',
      NOX_QUOTA_MEMORY_MAX_ENTRIES: '100000',
      NOX_FANOUT_SESSIONS: '256',
      NOX_FANOUT_TOKENREVIEW: '16/50/100',
      NOX_FANOUT_INTROSPECTION: '32/100/200',
      NOX_FANOUT_GITHUB: '16/20/50',
      NOX_SESSION_STORE: 'memory',
      NOX_SESSION_TIMEOUT_MS: '100',
      NOX_REDIS_NODES: '',
      NOX_REDIS_PASSWORD_FILE: '',
      NOX_REDIS_TIMEOUT_MS: '50',
      NOX_REDIS_WAIT_REPLICAS: '1',
      NOX_REDIS_WAIT_TIMEOUT_MS: '20',
      NOX_JWKS_COOLDOWN_MS: '30000',
      NOX_JWKS_MAX_AGE_MS: '600000',
      NOX_LOGIN_TITLE: '',
      NOX_LOGIN_LOGO_URL: '',
      NOX_LOGIN_DEFAULT_PATH: '/',
      NOX_CHECK_DEADLINE_MS: '150',
      NOX_LOGIN_DEADLINE_MS: '5000',
      NOX_DRAIN_TIMEOUT_MS: '10000',
      NOX_LOG_LEVEL: 'info',
      NOX_AUDIT: 'BestEffort',
      NOX_AUDIT_SPOOL_DIR: '/var/lib/nox/audit',
      NOX_AUDIT_SPOOL_MAX_BYTES: '268435456',
      NOX_AUDIT_SPOOL_FULL: 'DropOldest',
      NOX_AUDIT_FLUSH_MS: '100',
    });
    // The chart's defaults equal the sidecar's, except where a chart means to differ.
    const settings = loadSettings(cm.data);
    for (const [key, def] of Object.entries(definitions)) {
      // anyHostNamespaces: the chart narrows "*" (every namespace) to its release namespace.
      const chartDiffers = ['configSource', 'httpHost', 'anyHostNamespaces'].includes(key);
      if (!chartDiffers) expect(settings[key as keyof typeof settings], def.env).toEqual(def.default);
    }
    expect(settings.configSource).toBe('kubernetes');
  });

  it('has one ConfigMap key per sidecar setting, except the database URL (a Secret) and the kubeconfig', async () => {
    for (const args of [[], ['--set', 'sidecar.configSource=files']]) {
      const cm = find(await render('demo', args), 'ConfigMap', 'demo-nox-sidecar');
      const keys = Object.keys(cm.data ?? {}).filter((k) => k.startsWith('NOX_'));
      expect(keys.sort()).toEqual(configMapSettings);
    }
  });

  it('takes every setting, names and labels from values', async () => {
    const values = valuesFile({
      serviceAccount: { name: 'authz', annotations: { 'example.com/role': 'authz' } },
      commonLabels: { team: 'platform' },
      sidecar: {
        grpcHost: '0.0.0.0',
        grpcPort: 7001,
        httpPort: 7002,
        configSource: 'kubernetes',
        watchNamespaces: ['team-a', 'team-b', 'team-a'],
        quotaStore: 'redis-cluster',
        quotaMemoryMaxEntries: 2500000,
        fanout: { sessions: '64', tokenReview: '4/10', introspection: '8/20/40', github: '2/1/5' },
        sessionStore: 'redis-cluster',
        sessionTimeoutMs: 80,
        redisNodes: ['redis-0.redis:6379', 'redis-1.redis:6379'],
        redisPasswordSecret: { name: 'redis-auth', key: 'redis-password' },
        redisTimeoutMs: 40,
        redisWaitReplicas: 0,
        redisWaitTimeoutMs: 15,
        databaseUrlSecret: { name: 'pg-app', key: 'uri' },
        checkDeadlineMs: 120,
        loginDeadlineMs: 4000,
        drainTimeoutMs: 5000,
        jwksCooldownMs: 10000,
        jwksMaxAgeMs: 300000,
        loginTitle: 'Acme Portal',
        loginLogoUrl: 'https://cdn.example.com/acme.svg',
        loginDefaultPath: '/portal/',
        logLevel: 'debug',
        audit: { mode: 'Durable', spoolMaxBytes: 1073741824, spoolFull: 'Deny', flushMs: 50 },
      },
    });
    const objects = await render('nox', ['-f', values]);
    // A release named like the chart is not prefixed twice.
    const cm = find(objects, 'ConfigMap', 'nox-sidecar');
    expect(cm.data).toEqual({
      NOX_GRPC_HOST: '0.0.0.0',
      NOX_GRPC_PORT: '7001',
      NOX_HTTP_HOST: '0.0.0.0',
      NOX_HTTP_PORT: '7002',
      NOX_CONFIG_SOURCE: 'kubernetes',
      NOX_POLICY_PATH: '',
      NOX_WATCH_NAMESPACES: 'team-a,team-b',
      NOX_ANY_HOST_NAMESPACES: 'nox-system',
      NOX_SECRETS_DIR: '',
      NOX_QUOTA_STORE: 'redis-cluster',
      NOX_QUOTA_MEMORY_MAX_ENTRIES: '2500000',
      NOX_FANOUT_SESSIONS: '64',
      NOX_FANOUT_TOKENREVIEW: '4/10',
      NOX_FANOUT_INTROSPECTION: '8/20/40',
      NOX_FANOUT_GITHUB: '2/1/5',
      NOX_SESSION_STORE: 'redis-cluster',
      NOX_SESSION_TIMEOUT_MS: '80',
      NOX_REDIS_NODES: 'redis-0.redis:6379,redis-1.redis:6379',
      NOX_REDIS_PASSWORD_FILE: '/var/run/secrets/nox/redis/password',
      NOX_REDIS_TIMEOUT_MS: '40',
      NOX_REDIS_WAIT_REPLICAS: '0',
      NOX_REDIS_WAIT_TIMEOUT_MS: '15',
      NOX_JWKS_COOLDOWN_MS: '10000',
      NOX_JWKS_MAX_AGE_MS: '300000',
      NOX_LOGIN_TITLE: 'Acme Portal',
      NOX_LOGIN_LOGO_URL: 'https://cdn.example.com/acme.svg',
      NOX_LOGIN_DEFAULT_PATH: '/portal/',
      NOX_CHECK_DEADLINE_MS: '120',
      NOX_LOGIN_DEADLINE_MS: '4000',
      NOX_DRAIN_TIMEOUT_MS: '5000',
      NOX_LOG_LEVEL: 'debug',
      NOX_AUDIT: 'Durable',
      NOX_AUDIT_SPOOL_DIR: '/var/lib/nox/audit',
      NOX_AUDIT_SPOOL_MAX_BYTES: '1073741824',
      NOX_AUDIT_SPOOL_FULL: 'Deny',
      NOX_AUDIT_FLUSH_MS: '50',
    });
    // What the sidecar makes of them.
    expect(loadSettings(cm.data)).toMatchObject({
      grpcPort: 7001,
      watchNamespaces: 'team-a,team-b',
      quotaStore: 'redis-cluster',
      redisWaitReplicas: 0,
      redisWaitTimeoutMs: 15,
      databaseUrl: '',
      loginTitle: 'Acme Portal',
      loginLogoUrl: 'https://cdn.example.com/acme.svg',
      loginDefaultPath: '/portal/',
      logLevel: 'debug',
    });
    expect(cm.metadata.labels?.team).toBe('platform');
    expect(find(objects, 'ServiceAccount', 'authz').metadata.annotations).toEqual({
      'example.com/role': 'authz',
    });
  });

  it('files source: writes sidecar.policies into the ConfigMap as manifests the sidecar accepts', async () => {
    const objects = await render('demo', [
      '-f',
      valuesFile({
        sidecar: { configSource: 'files', policyMountPath: '/config/', policies: demoPolicies },
      }),
    ]);
    const cm = find(objects, 'ConfigMap', 'demo-nox-sidecar');
    expect(cm.data).toMatchObject({ NOX_CONFIG_SOURCE: 'files', NOX_POLICY_PATH: '/config/policies.yaml' });
    const docs = parseAllDocuments(cm.data?.['policies.yaml'] ?? '');
    for (const d of docs) expect(d.errors).toEqual([]);
    const manifests = docs.map((d) => d.toJS() as Record<string, unknown>);
    expect(manifests).toEqual(demoPolicies);
    expect(manifests.map((m) => m.kind).sort()).toEqual(['AccessPolicy', 'QuotaPolicy']);
    for (const m of manifests) expect(validateResource(m), JSON.stringify(m)).toMatchObject({ ok: true });
    expect(loadSettings(cm.data).policyPath).toBe('/config/policies.yaml');

    // No policies: an empty file (every route denied NO_POLICY), never a missing one.
    const empty = find(
      await render('demo', ['--set', 'sidecar.configSource=files']),
      'ConfigMap',
      'demo-nox-sidecar',
    );
    expect(empty.data?.['policies.yaml']).toBe('');
    expect(empty.data?.NOX_POLICY_PATH).toBe('/etc/nox/policies.yaml');
  });

  it('keeps Secrets out of values and the ConfigMap: the container gets them by reference', async () => {
    const { pod, objects } = await renderPod([
      '-f',
      valuesFile({
        sidecar: {
          configSource: 'files',
          policies: demoPolicies,
          policySecrets: [{ name: 'github-client' }, { name: 'api-keys', namespace: 'team-a' }],
          quotaStore: 'redis',
          redisNodes: ['redis:6379'],
          redisPasswordSecret: { name: 'redis-auth', key: 'redis-password' },
          databaseUrlSecret: { name: 'pg-app', key: 'uri' },
        },
      }),
    ]);
    expect(objects.filter((o) => o.kind === 'Secret')).toEqual([]);
    const cm = find(objects, 'ConfigMap', 'demo-nox-sidecar');
    expect(Object.keys(cm.data ?? {})).not.toContain('NOX_DATABASE_URL');

    const spec = pod.spec as { containers: Container[]; volumes: Volume[] };
    const [c] = spec.containers;
    expect(c?.name).toBe('nox-authz');
    expect(c?.envFrom).toEqual([{ configMapRef: { name: 'demo-nox-sidecar' } }]);
    expect(c?.env).toEqual([
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'NOX_DATABASE_URL', valueFrom: { secretKeyRef: { name: 'pg-app', key: 'uri' } } },
    ]);
    // Each file setting names a file that a read-only mount of the right volume provides.
    const fileFrom = (setting: string) => {
      const path = cm.data?.[setting] ?? '';
      const mount = c?.volumeMounts?.find((m) => m.mountPath === dirname(path));
      expect(mount, `${setting}=${path}`).toBeDefined();
      expect(mount?.readOnly).toBe(true);
      const volume = spec.volumes.find((v) => v.name === mount?.name);
      return {
        volume,
        item: (volume?.configMap ?? volume?.secret)?.items?.find((i) => i.path === basename(path)),
      };
    };
    const policies = fileFrom('NOX_POLICY_PATH');
    expect(policies.volume?.configMap?.name).toBe('demo-nox-sidecar');
    expect(policies.item?.key).toBe('policies.yaml');
    const password = fileFrom('NOX_REDIS_PASSWORD_FILE');
    expect(password.volume?.secret?.secretName).toBe('redis-auth');
    expect(password.item?.key).toBe('redis-password');
    // Policy Secrets: each a directory <NOX_SECRETS_DIR>/<namespace>/<name> holding its keys.
    const secretsDir = cm.data?.NOX_SECRETS_DIR ?? '';
    expect(secretsDir).toMatch(/^\/.+/);
    for (const [ns, name] of [
      ['default', 'github-client'],
      ['team-a', 'api-keys'],
    ]) {
      const mount = c?.volumeMounts?.find((m) => m.mountPath === `${secretsDir}/${ns}/${name}`);
      expect(mount?.readOnly, `${ns}/${name}`).toBe(true);
      expect(spec.volumes.find((v) => v.name === mount?.name)?.secret).toEqual({ secretName: name });
    }
    expect(loadSettings(cm.data)).toMatchObject({
      secretsDir,
      redisPasswordFile: '/var/run/secrets/nox/redis/password',
      databaseUrl: '',
    });
    expect(c?.readinessProbe).toBeDefined();

    // Nothing to mount and no Secret env when no Secret is referenced (memory store, kubernetes source).
    const bare = (await renderPod([])).pod.spec as { containers: Container[]; volumes?: Volume[] };
    expect(bare.containers[0]?.env).toEqual([
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    ]);
    expect(bare.containers[0]?.volumeMounts).toBeUndefined();
    expect(bare.volumes).toBeUndefined();
    // A password Secret without a Redis store is not mounted.
    const memory = await renderPod(['--set', 'sidecar.redisPasswordSecret.name=redis-auth']);
    expect((memory.pod.spec as { volumes?: Volume[] }).volumes).toBeUndefined();
    expect(find(memory.objects, 'ConfigMap', 'demo-nox-sidecar').data?.NOX_REDIS_PASSWORD_FILE).toBe('');
    // Sessions in Redis use the same password file as quotas do.
    const sessions = await renderPod([
      '--set',
      'sidecar.sessionStore=redis',
      '--set',
      'sidecar.redisNodes={redis:6379}',
      '--set',
      'sidecar.redisPasswordSecret.name=redis-auth',
    ]);
    expect((sessions.pod.spec as { volumes?: Volume[] }).volumes?.map((v) => v.secret?.secretName)).toEqual([
      'redis-auth',
    ]);
    expect(find(sessions.objects, 'ConfigMap', 'demo-nox-sidecar').data).toMatchObject({
      NOX_QUOTA_STORE: 'memory',
      NOX_SESSION_STORE: 'redis',
      NOX_REDIS_PASSWORD_FILE: '/var/run/secrets/nox/redis/password',
    });
  });

  it('grants the generated rules cluster-wide when watching all namespaces', async () => {
    const objects = await render('demo');
    const policies = find(objects, 'ClusterRole', 'nox-system:demo-nox-sidecar-policies');
    expect(policies.rules).toEqual(sidecarRbac.namespaced);
    const tokenreview = find(objects, 'ClusterRole', 'nox-system:demo-nox-sidecar-tokenreview');
    expect(tokenreview.rules).toEqual(sidecarRbac.cluster);
    for (const name of ['nox-system:demo-nox-sidecar-policies', 'nox-system:demo-nox-sidecar-tokenreview']) {
      const binding = find(objects, 'ClusterRoleBinding', name);
      expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name });
      expect(binding.subjects).toEqual([
        { kind: 'ServiceAccount', name: 'demo-nox', namespace: 'nox-system' },
      ]);
    }
  });

  it('grants the generated rules by a Role in each watched namespace, and nothing cluster-wide but TokenReview', async () => {
    const objects = await render('demo', [
      '--set-json',
      'sidecar.watchNamespaces=["team-a","team-b","team-a"]',
    ]);
    expect(ids(ofComponent(objects, 'sidecar').filter((o) => rbacKinds.has(o.kind)))).toEqual([
      'ClusterRole/nox-system:demo-nox-sidecar-tokenreview',
      'ClusterRoleBinding/nox-system:demo-nox-sidecar-tokenreview',
      'Role/team-a/demo-nox-sidecar',
      'Role/team-b/demo-nox-sidecar',
      'RoleBinding/team-a/demo-nox-sidecar',
      'RoleBinding/team-b/demo-nox-sidecar',
    ]);
    for (const ns of ['team-a', 'team-b']) {
      const role = objects.find((o) => o.kind === 'Role' && o.metadata.namespace === ns);
      expect(role?.rules).toEqual(sidecarRbac.namespaced);
      const binding = objects.find((o) => o.kind === 'RoleBinding' && o.metadata.namespace === ns);
      expect(binding?.roleRef).toEqual({
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'Role',
        name: 'demo-nox-sidecar',
      });
      // The subject lives in the release namespace, not in the watched one.
      expect(binding?.subjects).toEqual([
        { kind: 'ServiceAccount', name: 'demo-nox', namespace: 'nox-system' },
      ]);
    }
    expect(find(objects, 'ClusterRole', 'nox-system:demo-nox-sidecar-tokenreview').rules).toEqual(
      sidecarRbac.cluster,
    );
  });

  it('grants nothing with the files source (the sidecar never calls the API), nor with rbac.create=false', async () => {
    const files = await render('demo', ['--set', 'sidecar.configSource=files']);
    expect(ofComponent(files, 'sidecar').filter((o) => rbacKinds.has(o.kind))).toEqual([]);
    const none = await render('demo', ['--set', 'rbac.create=false']);
    expect(ofComponent(none, 'sidecar').filter((o) => rbacKinds.has(o.kind))).toEqual([]);
  });

  it('binds an existing ServiceAccount when serviceAccount.create=false, never the default one', async () => {
    const objects = await render('demo', [
      '--set',
      'serviceAccount.create=false',
      '--set',
      'serviceAccount.name=gateway',
    ]);
    expect(ofComponent(objects, 'sidecar').filter((o) => o.kind === 'ServiceAccount')).toEqual([]);
    for (const o of ofComponent(objects, 'sidecar').filter((x) => x.kind === 'ClusterRoleBinding'))
      expect(o.subjects).toEqual([{ kind: 'ServiceAccount', name: 'gateway', namespace: 'nox-system' }]);

    const res = await helm(['template', 'demo', 'charts/nox', '--set', 'serviceAccount.create=false']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('needs serviceAccount.name');
    const noRbac = await render('demo', [
      '--set',
      'serviceAccount.create=false',
      '--set',
      'rbac.create=false',
    ]);
    expect(ofComponent(noRbac, 'sidecar').map((o) => o.kind)).toEqual(['ConfigMap']);
  });

  it('the generated sidecar RBAC is read-only but for creating TokenReviews, without wildcards', () => {
    const rules = [...sidecarRbac.namespaced, ...sidecarRbac.cluster];
    for (const r of rules) {
      for (const list of [r.apiGroups, r.resources, r.verbs]) expect(list).not.toContain('*');
      const writes = r.verbs.filter((v) => !['get', 'list', 'watch'].includes(v));
      if (writes.length > 0)
        expect(r).toEqual({
          apiGroups: ['authentication.k8s.io'],
          resources: ['tokenreviews'],
          verbs: ['create'],
        });
    }
    expect(JSON.parse(readFileSync(join(chartDir, 'files', 'sidecar-rbac.json'), 'utf8'))).toEqual(
      sidecarRbac,
    );
  });

  it('ships the CRDs of crds/ unchanged (helm installs them before the templates)', async () => {
    const top = readdirSync(join(repoRoot, 'crds')).sort();
    expect(readdirSync(join(chartDir, 'crds')).sort()).toEqual(top);
    for (const f of top)
      expect(readFileSync(join(chartDir, 'crds', f), 'utf8'), f).toBe(
        readFileSync(join(repoRoot, 'crds', f), 'utf8'),
      );
    const res = await helm(['template', 'demo', 'charts/nox', '--include-crds']);
    expect(res.code, res.stderr).toBe(0);
    const byName = (objs: K8sObject[]) => Object.fromEntries(objs.map((o) => [o.metadata.name, o]));
    const shipped = byName(parseObjects(res.stdout).filter((o) => o.kind === 'CustomResourceDefinition'));
    const expected = byName(
      top.map((f) => parse(readFileSync(join(repoRoot, 'crds', f), 'utf8')) as K8sObject),
    );
    expect(Object.keys(shipped).sort()).toEqual(
      [
        ...policyKinds.map((k) => `${k.plural}.nox.dev`),
        'postgresclusters.nox.dev',
        'redisclusters.nox.dev',
      ].sort(),
    );
    expect(shipped).toEqual(expected);
  });

  it('ships CRDs that mean the same to YAML 1.1 readers (helm, kubectl) as to YAML 1.2 ones', () => {
    // Go's YAML (sigs.k8s.io/yaml) reads unquoted Off/On/Yes/No as booleans; the yaml package
    // (YAML 1.2) reads them as strings. A CRD must not depend on which one reads it.
    const drift: string[] = [];
    const walk = (a: unknown, b: unknown, path: string) => {
      if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
        for (const k of new Set([...Object.keys(a), ...Object.keys(b)]))
          walk((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`);
      } else if (a !== b)
        drift.push(`${path}: ${JSON.stringify(a)} (YAML 1.2) vs ${JSON.stringify(b)} (YAML 1.1)`);
    };
    for (const f of readdirSync(join(chartDir, 'crds'))) {
      const text = readFileSync(join(chartDir, 'crds', f), 'utf8');
      walk(parse(text), parse(text, { version: '1.1' }), f);
    }
    expect(drift).toEqual([]);
  });

  it('lists the policy kinds the sidecar reads in the schema of sidecar.policies', () => {
    const schema = JSON.parse(readFileSync(join(chartDir, 'values.schema.json'), 'utf8'));
    expect(schema.properties.sidecar.properties.policies.items.properties.kind.enum.sort()).toEqual(
      policyKinds.map((k) => k.kind).sort(),
    );
  });

  it('rejects values that break the schema, and Secrets given as values', async () => {
    for (const [args, field] of [
      [['--set', 'sidecar.grpcPort=70000'], 'grpcPort'],
      [['--set', 'sidecar.logLevel=loud'], 'logLevel'],
      [['--set', 'image.pullPolicy=Sometimes'], 'pullPolicy'],
      [['--set', 'sidecar.configSource=git'], 'configSource'],
      [['--set', 'sidecar.quotaStore=etcd'], 'quotaStore'],
      [['--set', 'sidecar.sessionStore=cookie'], 'sessionStore'],
      [['--set', 'sidecar.sessionTimeoutMs=0'], 'sessionTimeoutMs'],
      [['--set', 'sidecar.redisNodes={redis}'], 'redisNodes'],
      [['--set', 'sidecar.redisWaitReplicas=6'], 'redisWaitReplicas'],
      [['--set', 'sidecar.watchNamespaces={Team_A}'], 'watchNamespaces'],
      [['--set', 'sidecar.policyMountPath=etc'], 'policyMountPath'],
      [['--set', 'sidecar.loginDefaultPath=//evil.example'], 'loginDefaultPath'],
      [['--set', 'sidecar.loginLogoUrl=http://cdn.example.com/logo.svg'], 'loginLogoUrl'],
      [['--set-json', 'sidecar.policySecrets=[{"name":"Bad_Name"}]'], 'policySecrets'],
      [
        [
          '--set-json',
          'sidecar.policies=[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"spec":{}}]',
        ],
        'policies',
      ],
      // A Secret's value has no place in values: only { name, key } references are accepted.
      [['--set', 'sidecar.databaseUrl=postgres://nox:hunter2@db/nox'], 'databaseUrl'],
      [['--set', 'sidecar.redisPassword=hunter2'], 'redisPassword'],
      [['--set', 'sidecar.redisPasswordSecret.value=hunter2'], 'value'],
      [['--set', 'operator.replicas=0'], 'replicas'],
      [['--set', 'operator.httpPort=0'], 'httpPort'],
      [['--set', 'operator.logLevel=loud'], 'logLevel'],
      [['--set', 'operator.watchNamespaces={Team_A}'], 'watchNamespaces'],
      [['--set', 'operator.leaseName=Nox_Leader'], 'leaseName'],
      [['--set', 'operator.resources.requests.memory=lots'], 'memory'],
      [['--set', 'operator.resources.request.memory=1Gi'], 'request'],
      [['--set', 'operator.image=other'], 'image'],
    ] as const) {
      const res = await helm(['template', 'demo', 'charts/nox', ...args]);
      expect(res.code, args.join(' ')).not.toBe(0);
      expect(res.stderr, args.join(' ')).toContain(field);
    }
  });

  it('rejects combinations the sidecar would not start with, or would silently ignore', async () => {
    for (const [args, message] of [
      [['--set', 'sidecar.quotaStore=redis'], 'sidecar.quotaStore=redis needs sidecar.redisNodes'],
      [
        ['--set', 'sidecar.quotaStore=redis-cluster'],
        'sidecar.quotaStore=redis-cluster needs sidecar.redisNodes',
      ],
      [['--set', 'sidecar.sessionStore=redis'], 'sidecar.sessionStore=redis needs sidecar.redisNodes'],
      [
        [
          '--set',
          'sidecar.quotaStore=redis-cluster',
          '--set',
          'sidecar.sessionStore=redis',
          '--set',
          'sidecar.redisNodes={redis:6379}',
        ],
        'both must be redis or both redis-cluster',
      ],
      [
        ['-f', valuesFile({ sidecar: { policies: demoPolicies } })],
        'sidecar.policies is read only with sidecar.configSource=files',
      ],
      [
        ['--set-json', 'sidecar.policySecrets=[{"name":"a"}]'],
        'sidecar.policySecrets is read only with sidecar.configSource=files',
      ],
      [
        [
          '--set',
          'sidecar.configSource=files',
          '--set-json',
          'sidecar.policySecrets=[{"name":"a"},{"name":"a","namespace":"default"}]',
        ],
        'sidecar.policySecrets lists default/a twice',
      ],
    ] as const) {
      const res = await helm(['template', 'demo', 'charts/nox', ...args]);
      expect(res.code, args.join(' ')).not.toBe(0);
      expect(res.stderr).toContain(message);
    }
  });
  describe('operator', () => {
    it('renders the Deployment, its own ServiceAccount, the metrics Service and a PDB with the defaults', async () => {
      const objects = await render('demo');
      expect(ids(ofComponent(objects, 'operator').filter((o) => !rbacKinds.has(o.kind)))).toEqual([
        'Deployment/nox-system/demo-nox-operator',
        'PodDisruptionBudget/nox-system/demo-nox-operator',
        'Service/nox-system/demo-nox-operator',
        'ServiceAccount/nox-system/demo-nox-operator',
      ]);
      const { spec, pod, container } = operatorDeployment(objects);
      expect(spec.replicas).toBe(2);
      // The selector picks the operator's pods only, never the sidecar's of the same release.
      expect(spec.selector.matchLabels).toEqual({
        'app.kubernetes.io/name': 'nox',
        'app.kubernetes.io/instance': 'demo',
        'app.kubernetes.io/component': 'operator',
      });
      expect(spec.template.metadata.labels).toMatchObject(spec.selector.matchLabels);
      expect(spec.template.metadata.annotations).toBeUndefined();

      // Its own ServiceAccount, with a token (it calls the API), not the sidecar's.
      expect(pod.serviceAccountName).toBe('demo-nox-operator');
      expect(pod.automountServiceAccountToken).toBe(true);

      // The sidecar's image, running the other program.
      expect(container.name).toBe('nox-operator');
      expect(container.image).toBe('ghcr.io/nox-dev/nox:0.1.0');
      // The image's entrypoint (`nox <program>`) runs the program its argument names.
      expect(container.command).toBeUndefined();
      expect(container.args).toEqual(['operator']);

      // The probes and the Service reach the port the operator listens on.
      const env = resolvedEnv(container.env);
      expect(container.ports).toEqual([{ name: 'http-metrics', containerPort: Number(env.NOX_HTTP_PORT) }]);
      expect(container.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'http-metrics' });
      expect(container.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'http-metrics' });
      const service = find(objects, 'Service', 'demo-nox-operator').spec;
      expect(service).toEqual({
        type: 'ClusterIP',
        selector: spec.selector.matchLabels,
        ports: [{ name: 'http-metrics', port: 9090, targetPort: 'http-metrics', protocol: 'TCP' }],
      });
      expect(find(objects, 'PodDisruptionBudget', 'demo-nox-operator').spec).toEqual({
        maxUnavailable: 1,
        selector: { matchLabels: spec.selector.matchLabels },
      });
      expect(container.resources).toEqual({
        requests: { cpu: '100m', memory: '128Mi' },
        limits: { memory: '512Mi' },
      });
      for (const field of ['nodeSelector', 'tolerations', 'affinity'] as const)
        expect(pod[field], field).toBeUndefined();
    });

    it('sets only variables operator/settings.ts declares, and the operator accepts them', async () => {
      const { container } = operatorDeployment(await render('demo'));
      const names = container.env.map((e) => e.name);
      expect(new Set(names).size).toBe(names.length);
      const declared = new Set(Object.values(operatorDefinitions).map((d) => d.env));
      // POD_NAME is no setting of its own: a setting's documented fallback ($POD_NAME).
      const fallbacks = new Set(
        Object.values(operatorDefinitions).flatMap((d) =>
          [...d.doc.matchAll(/\$([A-Z_]+)/g)].map((m) => m[1]),
        ),
      );
      for (const name of names)
        expect(declared.has(name) || fallbacks.has(name), `${name} is not in operator/settings.ts`).toBe(
          true,
        );
      expect(names.filter((n) => !declared.has(n))).toEqual(['POD_NAME']);

      const env = resolvedEnv(container.env);
      const settings = loadOperatorSettings(env);
      expect(settings).toMatchObject({
        operatorNamespace: 'nox-system',
        leaseName: 'demo-nox-operator',
        watchNamespaces: '',
        httpHost: '0.0.0.0',
        httpPort: 9090,
        logLevel: 'info',
      });
      expect(env.POD_NAME).toBe('demo-nox-operator-abc');
      // Everything the chart does not set is the operator's own default.
      for (const [key, def] of Object.entries(operatorDefinitions)) {
        if (!names.includes(def.env))
          expect(settings[key as keyof typeof settings], def.env).toEqual(def.default);
      }
    });

    it('runs under the restricted Pod Security Standard', async () => {
      for (const args of [[], ['-f', valuesFile({ operator: everyOperatorOption })]]) {
        const { pod, container } = operatorDeployment(await render('demo', args));
        expect(pod.securityContext).toEqual({
          runAsNonRoot: true,
          seccompProfile: { type: 'RuntimeDefault' },
        });
        expect(container.securityContext).toEqual({
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          runAsNonRoot: true,
          capabilities: { drop: ['ALL'] },
          seccompProfile: { type: 'RuntimeDefault' },
        });
        for (const field of ['hostNetwork', 'hostPID', 'hostIPC', 'volumes'] as const)
          expect(pod[field], field).toBeUndefined();
      }
    });

    it('grants exactly the generated rules: namespaced and cluster ones cluster-wide, the Lease in its namespace', async () => {
      const objects = await render('demo');
      expect(ids(ofComponent(objects, 'operator').filter((o) => rbacKinds.has(o.kind)))).toEqual([
        'ClusterRole/nox-system:demo-nox-operator',
        'ClusterRoleBinding/nox-system:demo-nox-operator',
        'Role/nox-system/demo-nox-operator-leader-election',
        'RoleBinding/nox-system/demo-nox-operator-leader-election',
      ]);
      expect(find(objects, 'ClusterRole', 'nox-system:demo-nox-operator').rules).toEqual([
        ...operatorRbac.namespaced,
        ...operatorRbac.cluster,
      ]);
      expect(find(objects, 'Role', 'demo-nox-operator-leader-election').rules).toEqual(
        operatorRbac.ownNamespace,
      );
      const subjects = [{ kind: 'ServiceAccount', name: 'demo-nox-operator', namespace: 'nox-system' }];
      for (const [kind, name, roleKind] of [
        ['ClusterRoleBinding', 'nox-system:demo-nox-operator', 'ClusterRole'],
        ['RoleBinding', 'demo-nox-operator-leader-election', 'Role'],
      ] as const) {
        const binding = find(objects, kind, name);
        expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: roleKind, name });
        expect(binding.subjects).toEqual(subjects);
      }
      expect(JSON.parse(readFileSync(join(chartDir, 'files', 'operator-rbac.json'), 'utf8'))).toEqual(
        operatorRbac,
      );
    });

    it('with watchNamespaces: a Role per namespace, nothing namespaced cluster-wide', async () => {
      // The release namespace may be a served one too: its Role and the Lease's do not collide.
      const objects = await render('demo', [
        '--set-json',
        'operator.watchNamespaces=["team-a","nox-system","team-a"]',
      ]);
      const rbac = ofComponent(objects, 'operator').filter((o) => rbacKinds.has(o.kind));
      const clusterWide = operatorRbac.cluster.length > 0 ? ['ClusterRole', 'ClusterRoleBinding'] : [];
      expect(ids(rbac)).toEqual(
        [
          ...clusterWide.map((kind) => `${kind}/nox-system:demo-nox-operator`),
          'Role/nox-system/demo-nox-operator',
          'Role/nox-system/demo-nox-operator-leader-election',
          'Role/team-a/demo-nox-operator',
          'RoleBinding/nox-system/demo-nox-operator',
          'RoleBinding/nox-system/demo-nox-operator-leader-election',
          'RoleBinding/team-a/demo-nox-operator',
        ].sort(),
      );
      for (const ns of ['team-a', 'nox-system']) {
        const role = rbac.find(
          (o) => o.kind === 'Role' && o.metadata.namespace === ns && o.metadata.name === 'demo-nox-operator',
        );
        expect(role?.rules, ns).toEqual(operatorRbac.namespaced);
        const binding = rbac.find(
          (o) =>
            o.kind === 'RoleBinding' &&
            o.metadata.namespace === ns &&
            o.metadata.name === 'demo-nox-operator',
        );
        expect(binding?.roleRef).toEqual({
          apiGroup: 'rbac.authorization.k8s.io',
          kind: 'Role',
          name: 'demo-nox-operator',
        });
        expect(binding?.subjects).toEqual([
          { kind: 'ServiceAccount', name: 'demo-nox-operator', namespace: 'nox-system' },
        ]);
      }
      for (const o of rbac.filter((x) => x.kind === 'ClusterRole'))
        expect(o.rules).toEqual(operatorRbac.cluster);
      const env = resolvedEnv(operatorDeployment(objects).container.env);
      expect(env.NOX_WATCH_NAMESPACES).toBe('team-a,nox-system');
    });

    it('takes every option from values', async () => {
      const objects = await render('demo', ['-f', valuesFile({ operator: everyOperatorOption })]);
      const { spec, pod, container } = operatorDeployment(objects);
      expect(spec.replicas).toBe(3);
      expect(spec.template.metadata.annotations).toEqual(everyOperatorOption.podAnnotations);
      expect(pod.nodeSelector).toEqual(everyOperatorOption.nodeSelector);
      expect(pod.tolerations).toEqual(everyOperatorOption.tolerations);
      expect(pod.affinity).toEqual(everyOperatorOption.affinity);
      expect(container.resources).toEqual(everyOperatorOption.resources);
      expect(container.ports).toEqual([{ name: 'http-metrics', containerPort: 8080 }]);
      expect(find(objects, 'Service', 'demo-nox-operator').spec?.ports).toEqual([
        { name: 'http-metrics', port: 8080, targetPort: 'http-metrics', protocol: 'TCP' },
      ]);
      expect(loadOperatorSettings(resolvedEnv(container.env))).toMatchObject({
        httpPort: 8080,
        leaseName: 'nox-leader',
        watchNamespaces: 'team-a,team-b',
        logLevel: 'debug',
      });
      // One replica: no PDB (maxUnavailable 1 of 1 protects nothing).
      const single = await render('demo', ['--set', 'operator.replicas=1']);
      expect(operatorDeployment(single).spec.replicas).toBe(1);
      expect(ofComponent(single, 'operator').filter((o) => o.kind === 'PodDisruptionBudget')).toEqual([]);
    });

    it('renders nothing of the operator with operator.enabled=false', async () => {
      const objects = await render('demo', ['--set', 'operator.enabled=false']);
      expect(ofComponent(objects, 'operator')).toEqual([]);
      expect(objects.filter((o) => o.metadata.name.includes('operator'))).toEqual([]);
      const defaults = await render('demo');
      expect(ids(objects)).toEqual(
        ids([
          ...ofComponent(defaults, 'sidecar'),
          ...ofComponent(defaults, 'authz'),
          ...ofComponent(defaults, 'test'),
        ]),
      );
    });

    it('the generated operator RBAC has no wildcards, and the Lease only in its own namespace', () => {
      const all = [...operatorRbac.namespaced, ...operatorRbac.ownNamespace, ...operatorRbac.cluster];
      for (const r of all)
        for (const list of [r.apiGroups, r.resources, r.verbs]) expect(list).not.toContain('*');
      const leases = (rules: readonly { resources: readonly string[] }[]) =>
        rules.filter((r) => r.resources.includes('leases'));
      expect(leases([...operatorRbac.namespaced, ...operatorRbac.cluster])).toEqual([]);
      expect(leases(operatorRbac.ownNamespace)).not.toEqual([]);
    });
  });
});
