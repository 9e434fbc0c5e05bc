import { ageColumn, type KindDefinition, readyColumn, reasonColumn } from '../kind.js';
import {
  arr,
  bool,
  conditions,
  duration,
  enumOf,
  int,
  mapOf,
  obj,
  patterns,
  resources,
  secretKeyRef,
  storage,
  str,
} from '../schema.js';

/** postgresql.conf settings the operator owns (replication, fencing and addressing depend on them). */
export const reservedPostgresParameters = [
  'port',
  'listen_addresses',
  'data_directory',
  'hba_file',
  'ident_file',
  'wal_level',
  'hot_standby',
  'primary_conninfo',
  'primary_slot_name',
  'synchronous_standby_names',
  'archive_mode',
  'restore_command',
  'recovery_target',
  'promote_trigger_file',
] as const;

export const postgresCluster: KindDefinition = {
  kind: 'PostgresCluster',
  plural: 'postgresclusters',
  singular: 'postgrescluster',
  shortNames: ['npg'],
  role: 'cluster',
  description:
    'A PostgreSQL primary with streaming replicas and automatic failover, run by the Nox operator.',
  spec: obj(
    'Size, replication, failover and resources.',
    {
      instances: int('Instances: one primary, the rest streaming replicas.', {
        minimum: 1,
        maximum: 9,
        default: 3,
      }),
      image: str('Container image (PostgreSQL 15).', { default: 'postgres:15', maxLength: 512 }),
      synchronous: obj(
        'Synchronous replication: a commit is acknowledged only once `number` replicas have it, so failover loses no acknowledged commit.',
        {
          mode: enumOf(
            'Off, Quorum (ANY n of the replicas) or First (the first n in order).',
            ['Off', 'Quorum', 'First'],
            { default: 'Off' },
          ),
          number: int('Replicas that must confirm each commit.', { minimum: 1, maximum: 8, default: 1 }),
        },
      ),
      failover: obj('Automatic failover.', {
        enabled: bool('Promote a replica when the primary is lost.', { default: true }),
        delay: duration('How long the primary must be unreachable before failover.', { default: '5s' }),
      }),
      switchoverTo: str(
        'Set to an instance (pod) name to move the primary there in a controlled switchover.',
        { pattern: patterns.dnsLabel, maxLength: 63 },
      ),
      database: obj('The application database.', {
        name: str('Database.', { default: 'nox', pattern: '^[a-z_][a-z0-9_]*$', maxLength: 63 }),
        owner: str('Owner role.', { default: 'nox', pattern: '^[a-z_][a-z0-9_]*$', maxLength: 63 }),
      }),
      migrations: obj(
        'Nox’s database schema (users, sessions, audit events, quota usage, overrides, risk events).',
        {
          enabled: bool(
            'Apply the schema migrations of the operator’s version to spec.database, as its owner, through the -rw Service once the cluster has a primary; idempotent (each migration once, under an advisory lock). Status condition SchemaMigrated and status.schema say how far it got.',
            { default: false },
          ),
        },
      ),
      superuserSecretRef: secretKeyRef('Superuser password; generated when absent.', 'password'),
      appSecretRef: secretKeyRef('Application role password; generated when absent.', 'password'),
      parameters: mapOf('Extra postgresql.conf parameters.', str('Value.', { maxLength: 1024 }), {
        maxProperties: 64,
      }),
      resources,
      storage,
      nodeSelector: mapOf('Node selector for the pods.', str('Value.', { maxLength: 63 }), {
        maxProperties: 16,
      }),
    },
    {
      rules: [
        {
          rule: "!has(self.synchronous) || self.synchronous.mode == 'Off' || self.synchronous.number < self.instances",
          message: 'synchronous.number must be less than instances (it counts replicas)',
          fieldPath: '.synchronous.number',
        },
        {
          rule: `!has(self.parameters) || self.parameters.all(k, !(k in ${JSON.stringify(reservedPostgresParameters).replaceAll('"', "'")}))`,
          message: `parameters must not set settings the operator manages: ${reservedPostgresParameters.join(', ')}`,
          fieldPath: '.parameters',
          reason: 'FieldValueForbidden',
        },
        {
          rule: '!has(self.switchoverTo) || self.instances > 1',
          message: 'switchoverTo needs at least 2 instances',
          fieldPath: '.switchoverTo',
        },
      ],
    },
  ),
  status: obj('Observed state.', {
    observedGeneration: int('Generation the status describes.', { minimum: 0 }),
    currentPrimary: str('Pod that is primary now.'),
    timeline: int('PostgreSQL timeline of the primary.', { minimum: 0 }),
    instances: arr(
      'Per instance.',
      obj('An instance.', {
        pod: str('Pod name.'),
        role: enumOf('Role.', ['primary', 'replica', 'fenced', 'unknown']),
        ready: bool('Accepting connections.'),
        receivedLsn: str('Last WAL position received (replicas).', { maxLength: 32 }),
        replayedLsn: str('Last WAL position replayed (replicas).', { maxLength: 32 }),
        lagBytes: int('Bytes behind the primary.', { minimum: 0 }),
        pendingRestart: bool(
          'A changed setting takes effect only after a restart, which the operator is rolling out (replicas first, then a switchover).',
        ),
      }),
      { maxItems: 9 },
    ),
    schema: obj('Nox’s schema in spec.database (with spec.migrations.enabled).', {
      version: int('Highest migration version applied to the database.', { minimum: 0 }),
      migratedAt: str('When the operator last checked or applied the migrations.', {
        format: 'date-time',
        maxLength: 64,
      }),
    }),
    lastFailover: obj('The last failover or switchover.', {
      time: str('When.', { format: 'date-time', maxLength: 64 }),
      from: str('Old primary.'),
      to: str('New primary.'),
      reason: str('Why.', { maxLength: 1024 }),
    }),
    conditions,
  }),
  printerColumns: [
    { name: 'Instances', type: 'integer', jsonPath: '.spec.instances' },
    { name: 'Primary', type: 'string', jsonPath: '.status.currentPrimary' },
    { name: 'Sync', type: 'string', jsonPath: '.spec.synchronous.mode', priority: 1 },
    readyColumn,
    reasonColumn,
    ageColumn,
  ],
};
