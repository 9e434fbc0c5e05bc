import { ageColumn, type KindDefinition, readyColumn, reasonColumn } from '../kind.js';
import {
  arr,
  bool,
  clusterName,
  conditions,
  enumOf,
  image,
  int,
  labelMap,
  obj,
  resources,
  secretKeyRef,
  settingsMap,
  storage,
  str,
  tolerations,
} from '../schema.js';

/** redis.conf settings the operator owns; a user value for them would break the cluster. */
export const reservedRedisSettings = [
  'port',
  'bind',
  'cluster-enabled',
  'cluster-config-file',
  'cluster-announce-ip',
  'dir',
  'requirepass',
  'masterauth',
  'appendonly',
  'appendfsync',
] as const;

export const redisCluster: KindDefinition = {
  kind: 'RedisCluster',
  plural: 'redisclusters',
  singular: 'rediscluster',
  shortNames: ['nrc'],
  role: 'cluster',
  description: 'A Redis Cluster run by the Nox operator for quotas, sessions and the block list.',
  spec: obj('Size, persistence and resources.', {
    masters: int('Master nodes; Redis Cluster needs at least 3 for failover by majority.', {
      minimum: 3,
      maximum: 100,
      default: 3,
    }),
    replicasPerMaster: int('Replicas of each master, placed on pods other than their master’s.', {
      minimum: 0,
      maximum: 5,
      default: 1,
    }),
    image: image('Container image.', 'redis:7.0'),
    persistence: obj('Durability.', {
      appendOnly: bool('AOF persistence, so usage survives restarts.', { default: true }),
      appendFsync: enumOf('AOF fsync policy.', ['always', 'everysec', 'no'], { default: 'everysec' }),
    }),
    passwordSecretRef: secretKeyRef('Password Secret; the operator generates one when absent.', 'password'),
    config: settingsMap('Extra redis.conf settings.', {
      field: 'config',
      namePattern: '^[a-z][a-z0-9-]*$',
      nameHint: 'redis.conf setting names in lower case (a-z, 0-9, "-")',
      reserved: reservedRedisSettings,
      maxProperties: 32,
    }),
    resources,
    storage,
    nodeSelector: labelMap('Node selector for the pods.'),
    tolerations,
  }),
  name: clusterName,
  status: obj('Observed state.', {
    observedGeneration: int('Generation the status describes.', { minimum: 0 }),
    readyNodes: int('Nodes up and in the cluster.', { minimum: 0 }),
    slotsCovered: int('Hash slots (of 16384) served by a healthy master.', { minimum: 0, maximum: 16384 }),
    nodes: arr(
      'Cluster nodes.',
      obj('A node.', {
        pod: str('Pod name.'),
        address: str('ip:port.', { maxLength: 64 }),
        id: str('Cluster node id.', { maxLength: 40 }),
        role: enumOf('Role.', ['master', 'replica', 'unknown']),
        masterId: str('For replicas, the master’s node id.', { maxLength: 40 }),
        slots: str('Slot ranges, for masters.', { maxLength: 4096 }),
      }),
      { maxItems: 600 },
    ),
    conditions,
  }),
  printerColumns: [
    { name: 'Masters', type: 'integer', jsonPath: '.spec.masters' },
    { name: 'Replicas', type: 'integer', jsonPath: '.spec.replicasPerMaster' },
    { name: 'Nodes-Ready', type: 'integer', jsonPath: '.status.readyNodes' },
    { name: 'Slots', type: 'integer', jsonPath: '.status.slotsCovered' },
    readyColumn,
    reasonColumn,
    ageColumn,
  ],
};
