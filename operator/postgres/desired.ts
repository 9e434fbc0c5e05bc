import { createHash } from 'node:crypto';
import type {
  V1ConfigMap,
  V1PodDisruptionBudget,
  V1Secret,
  V1Service,
  V1StatefulSet,
} from '@kubernetes/client-node';
import {
  durabilityPostgresParameters,
  reservedPostgresParameters,
} from '../../common/resources/kinds/postgresCluster.js';
import type { PostgresCluster, PostgresClusterSpec } from '../../common/resources/types.gen.js';
import {
  type ClusterChildNames,
  childMeta,
  clusterChildNames,
  dataVolume,
  headlessService,
  podDisruptionBudget,
  spreadOverNodes,
} from '../clusterChildren.js';
import { clusterLabels } from '../clusterLabels.js';
import { ROLE_LABEL } from './failoverRules.js';
import { instanceManagerScript, POSTGRES_PORT, SUPERUSER } from './instanceManager.js';

export * from './failoverRules.js';
export { instanceManagerScript, POSTGRES_PORT, SUPERUSER } from './instanceManager.js';

/**
 * The child objects of a PostgresCluster, computed from its spec alone (plus the passwords the
 * reconciler read or generated once): a pure function, unit-tested without a cluster and applied
 * as a whole with server-side apply on every reconcile.
 *
 * Roles are not part of the pod template: the operator sets the label nox.dev/role on each pod
 * (primary, replica or fenced) and the -rw / -ro Services select on it, so a failover is a label
 * change and never rolls the StatefulSet.
 */

export const PASSWORD_KEY = 'password';
/** Where the pod template records the hash of the ConfigMap, so that a config change rolls the pods. */
export const CONFIG_HASH_ANNOTATION = 'nox.dev/config-hash';
export const CONFIG_DIR = '/etc/postgresql';
export const PODINFO_DIR = '/etc/podinfo';
export const DATA_MOUNT = '/var/lib/postgresql/data';
export const SOCKET_DIR = '/var/run/postgresql';
export const PGDATA = `${DATA_MOUNT}/pgdata`;

export interface PostgresClusterNames extends ClusterChildNames {
  /** Generated superuser Secret (unused with spec.superuserSecretRef). */
  readonly superuserSecret: string;
  /** Generated application Secret (unused with spec.appSecretRef). */
  readonly appSecret: string;
  /** Read-write: the primary only. */
  readonly rw: string;
  /** Read-only: the replicas. */
  readonly ro: string;
}

export function namesOf(name: string): PostgresClusterNames {
  return {
    ...clusterChildNames(name, 'instances'),
    superuserSecret: `${name}-superuser`,
    appSecret: `${name}-app`,
    rw: `${name}-rw`,
    ro: `${name}-ro`,
  };
}

/** The pod names, in ordinal order (the StatefulSet's naming). */
export function instanceNames(name: string, instances: number): string[] {
  return Array.from({ length: instances }, (_, i) => `${name}-${i}`);
}

/** The replication slot of an instance on the primary (slot names allow [a-z0-9_] only). */
/** The -rw Service's DNS name: where a replica streams from (it routes to the pod labelled primary). */
export function rwHost(cluster: PostgresCluster): string {
  return `${namesOf(cluster.metadata.name).rw}.${cluster.metadata.namespace}.svc`;
}

/** The -ro Service's DNS name: reads that a replica may serve (the admin API's). */
export function roHost(cluster: PostgresCluster): string {
  return `${namesOf(cluster.metadata.name).ro}.${cluster.metadata.namespace}.svc`;
}

/**
 * primary_conninfo of a replica: the -rw Service, as the superuser (the password comes from the
 * passfile the instance manager writes), named after its pod so that synchronous_standby_names
 * knows it. The instance manager writes the same string from its environment (NOX_PRIMARY_HOST,
 * POD_NAME) when it makes a replica; the operator writes it when it attaches one (rejoin.ts).
 */
export function primaryConninfo(cluster: PostgresCluster, pod: string): string {
  return `host=${rwHost(cluster)} port=${POSTGRES_PORT} user=${SUPERUSER} application_name=${pod}`;
}

export function slotName(pod: string): string {
  return `nox_${pod.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`;
}

const labels = clusterLabels('postgres', 'postgres-cluster');
export const { selectorLabels, labelsOf, clusterOfPod } = labels;

/** Milliseconds of a duration like "5s", "1m30s", "500ms"; undefined when malformed. */
export function durationMs(d: string): number | undefined {
  if (!/^(\d+(ms|s|m|h|d|w))+$/.test(d)) return undefined;
  const unit: Record<string, number> = { ms: 1, s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7, w: 6.048e8 };
  let total = 0;
  for (const m of d.matchAll(/(\d+)(ms|s|m|h|d|w)/g)) total += Number(m[1]) * unit[m[2]!]!;
  return total;
}

/** Failover delay of the spec, in milliseconds (default 5 s). */
export function failoverDelayMs(spec: PostgresClusterSpec): number {
  return durationMs(spec.failover?.delay ?? '5s') ?? 5000;
}

/** Replicas that must confirm each commit (0: asynchronous). */
export function syncNumber(spec: PostgresClusterSpec): number {
  const s = spec.synchronous;
  return !s || s.mode === 'Off' ? 0 : s.number;
}

/** Settings the operator writes after the user's parameters, beyond the schema's reserved list. */
export const operatorOwnedParameters = ['password_encryption', 'wal_log_hints'] as const;

/** Minimum max_wal_senders / max_replication_slots: one per replica, plus room for a re-clone and a backup. */
export function minimumSenders(instances: number): number {
  return Math.max(instances - 1, 0) + 2;
}

/**
 * Problems a user can fix in the spec that the CRD schema cannot express. Empty: valid.
 * `name` is the cluster's name (switchoverTo must be one of its instances).
 */
export function validateSpec(spec: PostgresClusterSpec, name: string): string[] {
  const problems: string[] = [];
  const managed = new Set<string>([
    ...reservedPostgresParameters,
    ...operatorOwnedParameters,
    CONFIG_VERSION_SETTING,
  ]);
  const durability = new Set<string>(durabilityPostgresParameters);
  for (const [k, v] of Object.entries(spec.parameters ?? {})) {
    if (!/^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$/.test(k))
      problems.push(`parameters: "${k}" is not a postgresql.conf parameter name`);
    if (/[\r\n\0]/.test(v)) problems.push(`parameters: the value of "${k}" must be one line`);
    if (managed.has(k)) problems.push(`parameters: "${k}" is managed by the operator`);
    if (durability.has(k.toLowerCase()))
      problems.push(`parameters: "${k}" could let a failover lose an acknowledged commit, and is refused`);
  }
  const min = minimumSenders(spec.instances);
  for (const k of ['max_wal_senders', 'max_replication_slots']) {
    const v = spec.parameters?.[k];
    if (v === undefined) continue;
    if (!/^\d+$/.test(v.trim()) || Number(v) < min)
      problems.push(
        `parameters: ${k} must be a whole number of at least ${min} for ${spec.instances} instances`,
      );
  }
  const n = syncNumber(spec);
  if (n > 0 && n > spec.instances - 1)
    problems.push(
      `synchronous.number: ${n} replicas must confirm each commit, but ${spec.instances} instances have only ${spec.instances - 1} replicas`,
    );
  if (spec.switchoverTo !== undefined) {
    const pods = instanceNames(name, spec.instances);
    if (!pods.includes(spec.switchoverTo))
      problems.push(
        `switchoverTo: "${spec.switchoverTo}" is not an instance of this cluster (${pods.join(', ')})`,
      );
  }
  if (spec.failover?.delay !== undefined) {
    const ms = durationMs(spec.failover.delay);
    if (ms === undefined) problems.push(`failover.delay: "${spec.failover.delay}" is not a duration`);
    else if (ms < 1000)
      problems.push(
        'failover.delay: must be at least 1s, or a brief hiccup of the primary causes a failover',
      );
  }
  if (spec.database) {
    if (['postgres', 'template0', 'template1'].includes(spec.database.name))
      problems.push(`database.name: "${spec.database.name}" is a system database`);
    if (spec.database.owner === SUPERUSER || spec.database.owner.startsWith('pg_'))
      problems.push(`database.owner: "${spec.database.owner}" is reserved; choose an ordinary role`);
  }
  if (spec.superuserSecretRef && spec.appSecretRef && sameRef(spec.superuserSecretRef, spec.appSecretRef))
    problems.push('appSecretRef: must not be the superuser password');
  return problems;
}

function sameRef(a: { name: string; key: string }, b: { name: string; key: string }): boolean {
  return a.name === b.name && a.key === b.key;
}

/**
 * synchronous_standby_names for the spec: standbys are known by their application_name, which
 * the instance manager sets to the pod name. Every instance is listed, the primary included (a
 * server is never its own standby), so the value stays the same across failovers.
 */
export function synchronousStandbyNames(cluster: PostgresCluster): string {
  const s = cluster.spec.synchronous;
  if (!s || s.mode === 'Off') return '';
  const names = instanceNames(cluster.metadata.name, cluster.spec.instances)
    .map((n) => `"${n}"`)
    .join(', ');
  return `${s.mode === 'Quorum' ? 'ANY' : 'FIRST'} ${s.number} (${names})`;
}

/** Quote a postgresql.conf value (always single-quoted; quotes and backslashes doubled/escaped). */
export function confValue(v: string): string {
  return `'${v.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`;
}

/**
 * A custom setting at the end of postgresql.conf naming the version of the file's settings.
 * pg_settings.pending_restart speaks of the file an instance last read, and the kubelet
 * delivers a changed ConfigMap to each pod on its own schedule: until an instance reports the
 * current version, "no restart pending" may only mean "not read yet".
 */
export const CONFIG_VERSION_SETTING = 'nox.config_version';

/** The version postgresqlConf(cluster) ends with. */
export function configVersion(cluster: PostgresCluster): string {
  return createHash('sha256').update(postgresqlSettings(cluster)).digest('hex').slice(0, 16);
}

/** postgresql.conf: the settings, then the version they have. */
export function postgresqlConf(cluster: PostgresCluster): string {
  return `${postgresqlSettings(cluster)}${CONFIG_VERSION_SETTING} = '${configVersion(cluster)}'\n`;
}

/** The operator's defaults, then the user's parameters, then what the operator owns. */
function postgresqlSettings(cluster: PostgresCluster): string {
  const spec = cluster.spec;
  // Never below PostgreSQL's own default of 10: a standby refuses to start with a lower
  // max_wal_senders (or max_replication_slots) than its primary's, and a value that followed
  // spec.instances down would make a scale-down restart the replicas first into exactly that.
  const senders = String(Math.max(minimumSenders(spec.instances) + 2, 10));
  const settings = new Map<string, string>([
    ['max_wal_senders', senders],
    ['max_replication_slots', senders],
    ['wal_keep_size', '512MB'],
    ['hot_standby_feedback', 'on'],
    ['wal_receiver_timeout', '5s'],
    ['wal_sender_timeout', '5s'],
    ['wal_receiver_status_interval', '1s'],
    // A replica whose primary went away retries (through -rw, now the new primary) this often.
    ['wal_retrieve_retry_interval', '1s'],
    ['log_line_prefix', '%m [%p] %q%u@%d '],
  ]);
  for (const k of Object.keys(spec.parameters ?? {}).sort()) settings.set(k, spec.parameters![k]!);
  const owned: Record<string, string> = {
    // The instance manager passes listen_addresses (the pod IP), hba_file and the socket
    // directory on the command line, from the pod's environment.
    port: String(POSTGRES_PORT),
    wal_level: 'replica',
    hot_standby: 'on',
    synchronous_standby_names: synchronousStandbyNames(cluster),
    password_encryption: 'scram-sha-256',
    // pg_rewind needs it to bring a fenced former primary back as a replica.
    wal_log_hints: 'on',
  };
  for (const [k, v] of Object.entries(owned)) settings.set(k, v);
  const lines = [
    `# Generated by nox-operator for PostgresCluster ${cluster.metadata.namespace}/${cluster.metadata.name}.`,
    '# Edit spec.parameters of the PostgresCluster instead; changes here are overwritten.',
    ...[...settings].map(([k, v]) => `${k} = ${confValue(v)}`),
  ];
  return `${lines.join('\n')}\n`;
}

/**
 * pg_hba.conf: password (SCRAM) authentication everywhere; streaming replication for the
 * superuser from `replicationSources` (CIDRs of the pod network; "all" by default, since pod
 * addresses are not known in advance and the password is what guards the connection).
 */
export function pgHbaConf(replicationSources: readonly string[] = ['all']): string {
  const lines = [
    '# Generated by nox-operator; changes here are overwritten.',
    '# TYPE  DATABASE     USER      ADDRESS  METHOD',
    'local   all          all                scram-sha-256',
    ...replicationSources.map((src) => `host    replication  ${SUPERUSER}  ${src}  scram-sha-256`),
    'host    all          all       all      scram-sha-256',
  ];
  return `${lines.join('\n')}\n`;
}

export interface DesiredChildren {
  /** Absent with spec.superuserSecretRef. */
  readonly superuserSecret?: V1Secret;
  /** Absent with spec.appSecretRef. */
  readonly appSecret?: V1Secret;
  readonly configMap: V1ConfigMap;
  readonly headless: V1Service;
  readonly rw: V1Service;
  readonly ro: V1Service;
  readonly statefulSet: V1StatefulSet;
  readonly pdb: V1PodDisruptionBudget;
}

export interface DesiredInput {
  /** The generated superuser password (read back from its Secret, or new on the first reconcile). */
  readonly superuserPassword?: string;
  /** The generated application password, likewise. */
  readonly appPassword?: string;
  /** CIDRs allowed to stream WAL (pg_hba.conf); default "all". */
  readonly replicationSources?: readonly string[];
  /** The StatefulSet's size while a scale-down waits (scaleDown.ts); default spec.instances. */
  readonly statefulSetReplicas?: number;
}

/** Where the pods read the superuser password from. */
export function superuserPasswordRef(cluster: PostgresCluster): { name: string; key: string } {
  return (
    cluster.spec.superuserSecretRef ?? {
      name: namesOf(cluster.metadata.name).superuserSecret,
      key: PASSWORD_KEY,
    }
  );
}

/** Where the pods (and applications) read the application password from. */
export function appPasswordRef(cluster: PostgresCluster): { name: string; key: string } {
  return cluster.spec.appSecretRef ?? { name: namesOf(cluster.metadata.name).appSecret, key: PASSWORD_KEY };
}

function b64(s: string): string {
  return Buffer.from(s).toString('base64');
}

export function desiredChildren(cluster: PostgresCluster, input: DesiredInput = {}): DesiredChildren {
  const name = cluster.metadata.name;
  const namespace = cluster.metadata.namespace!;
  const spec = cluster.spec;
  const names = namesOf(name);
  const labels = labelsOf(name);
  const selector = selectorLabels(name);
  const database = spec.database ?? { name: 'nox', owner: 'nox' };
  const primaryHost = rwHost(cluster);
  const meta = childMeta(cluster, labels);

  let superuserSecret: V1Secret | undefined;
  if (!spec.superuserSecretRef) {
    if (!input.superuserPassword)
      throw new Error('desiredChildren: a generated superuser password is required');
    superuserSecret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: meta(names.superuserSecret),
      type: 'kubernetes.io/basic-auth',
      data: { username: b64(SUPERUSER), [PASSWORD_KEY]: b64(input.superuserPassword) },
    };
  }
  let appSecret: V1Secret | undefined;
  if (!spec.appSecretRef) {
    if (!input.appPassword) throw new Error('desiredChildren: a generated application password is required');
    const uriOf = (host: string) =>
      `postgresql://${encodeURIComponent(database.owner)}:${encodeURIComponent(input.appPassword!)}@${host}:${POSTGRES_PORT}/${encodeURIComponent(database.name)}`;
    const uri = uriOf(primaryHost);
    appSecret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: meta(names.appSecret),
      type: 'kubernetes.io/basic-auth',
      data: {
        username: b64(database.owner),
        [PASSWORD_KEY]: b64(input.appPassword),
        dbname: b64(database.name),
        host: b64(primaryHost),
        port: b64(String(POSTGRES_PORT)),
        uri: b64(uri),
        // The same through the -ro Service: for readers that may be served by a replica.
        'ro-uri': b64(uriOf(roHost(cluster))),
      },
    };
  }

  const configData = {
    'postgresql.conf': postgresqlConf(cluster),
    'pg_hba.conf': pgHbaConf(input.replicationSources),
    'instance-manager.sh': instanceManagerScript(),
  };
  const configMap: V1ConfigMap = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta(names.configMap),
    data: configData,
  };
  const configHash = createHash('sha256')
    .update(JSON.stringify(Object.entries(configData)))
    .digest('hex')
    .slice(0, 16);

  const port = { name: 'postgres', port: POSTGRES_PORT, targetPort: 'postgres', protocol: 'TCP' };
  const headless = headlessService(meta(names.headless), selector, [port]);
  const rw: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(names.rw),
    spec: { type: 'ClusterIP', selector: { ...selector, [ROLE_LABEL]: 'primary' }, ports: [port] },
  };
  const ro: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(names.ro),
    spec: { type: 'ClusterIP', selector: { ...selector, [ROLE_LABEL]: 'replica' }, ports: [port] },
  };

  const su = superuserPasswordRef(cluster);
  const app = appPasswordRef(cluster);
  const data = dataVolume(spec.storage, labels);
  const statefulSet: V1StatefulSet = {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: meta(names.statefulSet),
    spec: {
      serviceName: names.headless,
      replicas: input.statefulSetReplicas ?? spec.instances,
      // Replicas clone from the primary, which the operator picks: no ordering needed, start all.
      podManagementPolicy: 'Parallel',
      selector: { matchLabels: selector },
      // The operator restarts pods itself (replicas first, then a switchover), never the controller.
      updateStrategy: { type: 'OnDelete' },
      template: {
        metadata: { labels, annotations: { [CONFIG_HASH_ANNOTATION]: configHash } },
        spec: {
          enableServiceLinks: false,
          automountServiceAccountToken: false,
          // Let a fast shutdown finish its checkpoint.
          terminationGracePeriodSeconds: 60,
          securityContext: { runAsNonRoot: true, runAsUser: 999, runAsGroup: 999, fsGroup: 999 },
          ...(spec.nodeSelector ? { nodeSelector: spec.nodeSelector } : {}),
          affinity: spreadOverNodes(selector),
          containers: [
            {
              name: 'instance-manager',
              image: spec.image,
              command: ['sh', `${CONFIG_DIR}/instance-manager.sh`],
              env: [
                { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
                { name: 'NOX_CLUSTER', value: name },
                // The role is decided by the operator and read from the pod's labels.
                { name: 'NOX_PRIMARY_HOST', value: primaryHost },
                { name: 'NOX_INSTANCES_HOST', value: `${names.headless}.${namespace}.svc` },
                { name: 'NOX_APP_DATABASE', value: database.name },
                { name: 'NOX_APP_OWNER', value: database.owner },
                { name: 'PGDATA', value: PGDATA },
                { name: 'PGPORT', value: String(POSTGRES_PORT) },
                { name: 'PGHOST', value: SOCKET_DIR },
                { name: 'NOX_CONFIG_DIR', value: CONFIG_DIR },
                { name: 'NOX_PODINFO_DIR', value: PODINFO_DIR },
                { name: 'NOX_SOCKET_DIR', value: SOCKET_DIR },
                { name: 'POSTGRES_PASSWORD', valueFrom: { secretKeyRef: { name: su.name, key: su.key } } },
                { name: 'NOX_APP_PASSWORD', valueFrom: { secretKeyRef: { name: app.name, key: app.key } } },
              ],
              ports: [{ name: 'postgres', containerPort: POSTGRES_PORT, protocol: 'TCP' }],
              readinessProbe: {
                exec: { command: ['pg_isready', '-q', '-h', SOCKET_DIR, '-p', String(POSTGRES_PORT)] },
                periodSeconds: 1,
                timeoutSeconds: 2,
                successThreshold: 1,
                failureThreshold: 2,
              },
              ...(spec.resources ? { resources: spec.resources as never } : {}),
              volumeMounts: [
                { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
                { name: 'podinfo', mountPath: PODINFO_DIR, readOnly: true },
                { name: 'data', mountPath: DATA_MOUNT },
                { name: 'run', mountPath: SOCKET_DIR },
              ],
            },
          ],
          volumes: [
            { name: 'config', configMap: { name: names.configMap } },
            {
              name: 'podinfo',
              downwardAPI: {
                items: [
                  { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
                  { path: 'annotations', fieldRef: { fieldPath: 'metadata.annotations' } },
                ],
              },
            },
            { name: 'run', emptyDir: {} },
            ...data.volumes,
          ],
        },
      },
      ...(data.volumeClaimTemplates ? { volumeClaimTemplates: data.volumeClaimTemplates } : {}),
    },
  };

  const pdb = podDisruptionBudget(meta(names.pdb), selector);

  return {
    ...(superuserSecret ? { superuserSecret } : {}),
    ...(appSecret ? { appSecret } : {}),
    configMap,
    headless,
    rw,
    ro,
    statefulSet,
    pdb,
  };
}

/** The children in apply order (Secrets and ConfigMap before the pods that mount them). */
export function childList(c: DesiredChildren) {
  return [
    ...(c.superuserSecret ? [c.superuserSecret] : []),
    ...(c.appSecret ? [c.appSecret] : []),
    c.configMap,
    c.headless,
    c.rw,
    c.ro,
    c.pdb,
    c.statefulSet,
  ];
}
