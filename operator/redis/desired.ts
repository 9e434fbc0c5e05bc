import { createHash } from 'node:crypto';
import type {
  V1ConfigMap,
  V1OwnerReference,
  V1PodDisruptionBudget,
  V1Secret,
  V1Service,
  V1StatefulSet,
} from '@kubernetes/client-node';
import { reservedRedisSettings } from '../../common/resources/kinds/redisCluster.js';
import type { RedisCluster, RedisClusterSpec } from '../../common/resources/types.gen.js';

/**
 * The child objects of a RedisCluster, computed from its spec alone (plus the password the
 * reconciler read or generated): a pure function, so it is unit-tested without a cluster and
 * applied as a whole with server-side apply on every reconcile.
 */

export const REDIS_PORT = 6379;
export const BUS_PORT = REDIS_PORT + 10000;
export const PASSWORD_KEY = 'password';
/** Where the pod template records the hash of redis.conf, so that a config change rolls the pods. */
export const CONFIG_HASH_ANNOTATION = 'nox.dev/config-hash';

export interface RedisClusterNames {
  /** The generated password Secret (unused when spec.passwordSecretRef is set). */
  readonly secret: string;
  readonly configMap: string;
  /** Headless Service: one DNS name per pod, not-ready addresses published. */
  readonly headless: string;
  /** Client Service. */
  readonly client: string;
  readonly statefulSet: string;
  readonly pdb: string;
}

export function namesOf(name: string): RedisClusterNames {
  return {
    secret: `${name}-auth`,
    configMap: `${name}-config`,
    headless: `${name}-nodes`,
    client: name,
    statefulSet: name,
    pdb: name,
  };
}

/** The labels the StatefulSet selects its pods by (immutable once created). */
export function selectorLabels(name: string): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'redis',
    'app.kubernetes.io/instance': name,
  };
}

export function labelsOf(name: string): Record<string, string> {
  return {
    ...selectorLabels(name),
    'app.kubernetes.io/component': 'redis-cluster',
    'app.kubernetes.io/part-of': 'nox',
    'app.kubernetes.io/managed-by': 'nox-operator',
  };
}

/**
 * The RedisCluster a Pod belongs to, from its labels (for a runtime watch on Pods: a pod
 * turning ready or not wakes up its cluster). Pods are owned by the StatefulSet, not by the
 * RedisCluster, so owner references alone do not lead there.
 */
export function clusterOfPod(pod: {
  metadata?: { namespace?: string; labels?: Record<string, string> };
}): { namespace: string; name: string }[] {
  const labels = pod.metadata?.labels ?? {};
  const name = labels['app.kubernetes.io/instance'];
  const namespace = pod.metadata?.namespace;
  if (
    labels['app.kubernetes.io/name'] !== 'redis' ||
    labels['app.kubernetes.io/managed-by'] !== 'nox-operator'
  )
    return [];
  return name && namespace ? [{ namespace, name }] : [];
}

/** `a=b,c=d`, for list calls. */
export function labelSelector(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

export function totalNodes(spec: Pick<RedisClusterSpec, 'masters' | 'replicasPerMaster'>): number {
  return spec.masters * (1 + spec.replicasPerMaster);
}

/** Defaults the operator picks, each one overridable through spec.config. */
export const defaultRedisSettings: Readonly<Record<string, string>> = {
  // Long enough not to fail over on a busy node, short enough to heal in seconds.
  'cluster-node-timeout': '5000',
  // Prefer availability: a replica may take over however long its link was down.
  'cluster-replica-validity-factor': '0',
  'cluster-require-full-coverage': 'yes',
  // No RDB snapshots: AOF (or nothing) is the persistence the spec declares.
  save: '""',
  // A replica (re)attaching should not wait for others to join a diskless sync.
  'repl-diskless-sync-delay': '0',
  'protected-mode': 'no',
  'tcp-keepalive': '60',
};

/**
 * Problems a user can fix in the spec that the CRD schema cannot express. Empty: valid.
 * (The schema already bounds masters/replicas and forbids the reserved settings.)
 */
export function validateSpec(spec: RedisClusterSpec): string[] {
  const problems: string[] = [];
  for (const [k, v] of Object.entries(spec.config ?? {})) {
    if (!/^[a-z][a-z0-9-]*$/.test(k)) problems.push(`config: "${k}" is not a redis.conf setting name`);
    if (/[\r\n]/.test(v)) problems.push(`config: the value of "${k}" must be one line`);
    if ((reservedRedisSettings as readonly string[]).includes(k))
      problems.push(`config: "${k}" is managed by the operator`);
  }
  if (spec.masters < 3) problems.push('masters: Redis Cluster needs at least 3 masters');
  return problems;
}

/** redis.conf: the operator's defaults, then the user's settings, then what the operator owns. */
export function redisConf(cluster: RedisCluster): string {
  const spec = cluster.spec;
  const settings = new Map<string, string>(Object.entries(defaultRedisSettings));
  for (const k of Object.keys(spec.config ?? {}).sort()) settings.set(k, spec.config![k]!);
  const persistence = spec.persistence ?? { appendOnly: true, appendFsync: 'everysec' as const };
  const owned: Record<(typeof reservedRedisSettings)[number], string | undefined> = {
    port: String(REDIS_PORT),
    // All of the pod's addresses; the node announces its pod IP (args: --cluster-announce-ip).
    bind: '0.0.0.0',
    'cluster-enabled': 'yes',
    'cluster-config-file': 'nodes.conf',
    // Given on the command line: --dir, --cluster-announce-ip, --requirepass, --masterauth.
    'cluster-announce-ip': undefined,
    dir: undefined,
    requirepass: undefined,
    masterauth: undefined,
    appendonly: persistence.appendOnly ? 'yes' : 'no',
    appendfsync: persistence.appendFsync,
  };
  for (const [k, v] of Object.entries(owned)) if (v !== undefined) settings.set(k, v);
  const lines = [
    `# Generated by nox-operator for RedisCluster ${cluster.metadata.namespace}/${cluster.metadata.name}.`,
    '# Edit spec.config of the RedisCluster instead; changes here are overwritten.',
    ...[...settings].map(([k, v]) => `${k} ${v}`),
  ];
  return `${lines.join('\n')}\n`;
}

export interface DesiredChildren {
  /** Absent when the password comes from spec.passwordSecretRef. */
  readonly secret?: V1Secret;
  readonly configMap: V1ConfigMap;
  readonly headless: V1Service;
  readonly client: V1Service;
  readonly statefulSet: V1StatefulSet;
  readonly pdb: V1PodDisruptionBudget;
}

export interface DesiredInput {
  /**
   * The password of the generated Secret: the one already stored there, or a new one on the
   * first reconcile. Ignored (and may be absent) with spec.passwordSecretRef.
   */
  readonly generatedPassword?: string;
}

/** Where the pods read the password from. */
export function passwordRef(cluster: RedisCluster): { name: string; key: string } {
  return (
    cluster.spec.passwordSecretRef ?? { name: namesOf(cluster.metadata.name!).secret, key: PASSWORD_KEY }
  );
}

export function ownerReference(cluster: RedisCluster): V1OwnerReference {
  const uid = cluster.metadata.uid;
  if (!uid) throw new Error('RedisCluster without metadata.uid (not read from the API server?)');
  return {
    apiVersion: cluster.apiVersion,
    kind: cluster.kind,
    name: cluster.metadata.name!,
    uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function desiredChildren(cluster: RedisCluster, input: DesiredInput = {}): DesiredChildren {
  const name = cluster.metadata.name!;
  const namespace = cluster.metadata.namespace!;
  const spec = cluster.spec;
  const names = namesOf(name);
  const labels = labelsOf(name);
  const selector = selectorLabels(name);
  const meta = (objName: string) => ({
    name: objName,
    namespace,
    labels,
    ownerReferences: [ownerReference(cluster)],
  });

  let secret: V1Secret | undefined;
  if (!spec.passwordSecretRef) {
    if (!input.generatedPassword) throw new Error('desiredChildren: a generated password is required');
    secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: meta(names.secret),
      type: 'Opaque',
      data: { [PASSWORD_KEY]: Buffer.from(input.generatedPassword).toString('base64') },
    };
  }

  const conf = redisConf(cluster);
  const configMap: V1ConfigMap = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta(names.configMap),
    data: { 'redis.conf': conf },
  };

  const ports = [
    { name: 'redis', port: REDIS_PORT, targetPort: 'redis', protocol: 'TCP' },
    { name: 'bus', port: BUS_PORT, targetPort: 'bus', protocol: 'TCP' },
  ];
  const headless: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(names.headless),
    spec: {
      clusterIP: 'None',
      // Nodes must find each other (and the operator them) before they are ready.
      publishNotReadyAddresses: true,
      selector,
      ports,
    },
  };
  const client: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(names.client),
    spec: { type: 'ClusterIP', selector, ports: [ports[0]!] },
  };

  const pw = passwordRef(cluster);
  const storage = spec.storage;
  const statefulSet: V1StatefulSet = {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: meta(names.statefulSet),
    spec: {
      serviceName: names.headless,
      replicas: totalNodes(spec),
      // Redis Cluster nodes do not depend on each other to start: start them all at once.
      podManagementPolicy: 'Parallel',
      selector: { matchLabels: selector },
      updateStrategy: { type: 'RollingUpdate' },
      template: {
        metadata: {
          labels,
          annotations: {
            [CONFIG_HASH_ANNOTATION]: createHash('sha256').update(conf).digest('hex').slice(0, 16),
          },
        },
        spec: {
          enableServiceLinks: false,
          // Redis has no business with the Kubernetes API.
          automountServiceAccountToken: false,
          terminationGracePeriodSeconds: 30,
          securityContext: { runAsNonRoot: true, runAsUser: 999, runAsGroup: 999, fsGroup: 999 },
          ...(spec.nodeSelector ? { nodeSelector: spec.nodeSelector } : {}),
          ...(spec.tolerations ? { tolerations: spec.tolerations as never } : {}),
          affinity: {
            // Spread over nodes where possible, so that a replica rarely shares its master's node.
            podAntiAffinity: {
              preferredDuringSchedulingIgnoredDuringExecution: [
                {
                  weight: 100,
                  podAffinityTerm: {
                    topologyKey: 'kubernetes.io/hostname',
                    labelSelector: { matchLabels: selector },
                  },
                },
              ],
            },
          },
          containers: [
            {
              name: 'redis',
              image: spec.image,
              command: ['redis-server'],
              args: [
                '/etc/redis/redis.conf',
                '--dir',
                '/data',
                '--cluster-announce-ip',
                '$(POD_IP)',
                '--requirepass',
                '$(REDIS_PASSWORD)',
                '--masterauth',
                '$(REDIS_PASSWORD)',
              ],
              env: [
                { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
                { name: 'REDIS_PASSWORD', valueFrom: { secretKeyRef: { name: pw.name, key: pw.key } } },
              ],
              ports: [
                { name: 'redis', containerPort: REDIS_PORT, protocol: 'TCP' },
                { name: 'bus', containerPort: BUS_PORT, protocol: 'TCP' },
              ],
              readinessProbe: {
                exec: {
                  command: [
                    'sh',
                    '-c',
                    `REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h "$POD_IP" -p ${REDIS_PORT} ping | grep -q PONG`,
                  ],
                },
                periodSeconds: 2,
                timeoutSeconds: 2,
                successThreshold: 1,
                failureThreshold: 3,
              },
              ...(spec.resources ? { resources: spec.resources as never } : {}),
              volumeMounts: [
                { name: 'config', mountPath: '/etc/redis', readOnly: true },
                { name: 'data', mountPath: '/data' },
              ],
            },
          ],
          volumes: [
            { name: 'config', configMap: { name: names.configMap } },
            ...(storage ? [] : [{ name: 'data', emptyDir: {} }]),
          ],
        },
      },
      ...(storage
        ? {
            volumeClaimTemplates: [
              {
                apiVersion: 'v1',
                kind: 'PersistentVolumeClaim',
                metadata: { name: 'data', labels },
                spec: {
                  accessModes: ['ReadWriteOnce'],
                  resources: { requests: { storage: storage.size } },
                  ...(storage.storageClassName ? { storageClassName: storage.storageClassName } : {}),
                },
              },
            ],
          }
        : {}),
    },
  };

  const pdb: V1PodDisruptionBudget = {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: meta(names.pdb),
    spec: { maxUnavailable: 1, selector: { matchLabels: selector } },
  };

  return { ...(secret ? { secret } : {}), configMap, headless, client, statefulSet, pdb };
}

/** The children in apply order (the Secret and ConfigMap before the pods that mount them). */
export function childList(c: DesiredChildren) {
  return [...(c.secret ? [c.secret] : []), c.configMap, c.headless, c.client, c.pdb, c.statefulSet];
}
