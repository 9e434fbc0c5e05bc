import { ageColumn, type KindDefinition, readyColumn, reasonColumn } from '../kind.js';
import {
  arr,
  bool,
  boundedDuration,
  clusterName,
  conditions,
  enumOf,
  image,
  int,
  labelMap,
  obj,
  patterns,
  resources,
  secretKeyRef,
  settingsMap,
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

/** Written by the operator after the user's parameters (operator/postgres/desired.ts operatorOwnedParameters). */
const operatorWrittenParameters = ['password_encryption', 'wal_log_hints', 'nox.config_version'] as const;

/**
 * Settings that would void what the failover promises: a commit acknowledged to a client
 * that a failover loses (synchronous_commit local/off, fsync, full_page_writes, which
 * pg_rewind also needs), or a replica that looks current but replays behind or stops short
 * (recovery_min_apply_delay, recovery targets). Refused with that reason, in any case.
 */
export const durabilityPostgresParameters = [
  'synchronous_commit',
  'fsync',
  'full_page_writes',
  'recovery_min_apply_delay',
  'recovery_target_action',
  'recovery_target_inclusive',
  'recovery_target_lsn',
  'recovery_target_name',
  'recovery_target_time',
  'recovery_target_timeline',
  'recovery_target_xid',
] as const;

/** Databases PostgreSQL itself needs. */
const systemDatabases = ['postgres', 'template0', 'template1'] as const;

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
      image: image('Container image (PostgreSQL 15).', 'postgres:15'),
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
        delay: boundedDuration(
          'How long the primary must be unreachable before failover; shorter than 1s, a brief hiccup would fail over.',
          { name: 'failover.delay', min: '1s' },
          { default: '5s' },
        ),
      }),
      switchoverTo: str(
        'Set to an instance (pod) name, <name>-<ordinal> with ordinal below instances, to move the primary there in a controlled switchover.',
        { pattern: patterns.dnsLabel, maxLength: 63 },
      ),
      database: obj(
        'The application database.',
        {
          name: str('Database; not postgres, template0 or template1.', {
            default: 'nox',
            pattern: '^[a-z_][a-z0-9_]*$',
            maxLength: 63,
          }),
          owner: str('Owner role; an ordinary role: not postgres, not starting with pg_.', {
            default: 'nox',
            pattern: '^[a-z_][a-z0-9_]*$',
            maxLength: 63,
          }),
        },
        {
          rules: [
            {
              rule: `!(self.name in ${JSON.stringify(systemDatabases).replaceAll('"', "'")})`,
              message: `name must not be a system database (${systemDatabases.join(', ')})`,
              fieldPath: '.name',
            },
            {
              rule: "self.owner != 'postgres' && !self.owner.startsWith('pg_')",
              message: 'owner must be an ordinary role: not postgres, not starting with pg_',
              fieldPath: '.owner',
            },
          ],
        },
      ),
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
      parameters: settingsMap(
        'Extra postgresql.conf parameters. max_wal_senders and max_replication_slots, when set, must be whole numbers of at least instances + 1. Settings that would let a failover lose an acknowledged commit (synchronous_commit, fsync, full_page_writes, recovery_min_apply_delay, recovery_target_*) are refused.',
        {
          field: 'parameters',
          namePattern: '^[a-z_][a-z0-9_]*([.][a-z_][a-z0-9_]*)?$',
          nameHint:
            'postgresql.conf parameter names in lower case (a-z, 0-9, "_", one "." for an extension\'s)',
          reserved: [...reservedPostgresParameters, ...operatorWrittenParameters],
          maxProperties: 64,
        },
      ),
      resources,
      storage,
      nodeSelector: labelMap('Node selector for the pods.'),
    },
    {
      rules: [
        {
          rule: "!has(self.synchronous) || self.synchronous.mode == 'Off' || self.synchronous.number < self.instances",
          message: 'synchronous.number must be less than instances (it counts replicas)',
          fieldPath: '.synchronous.number',
        },
        ...(['max_wal_senders', 'max_replication_slots'] as const).map((k) => ({
          // operator/postgres/desired.ts minimumSenders: one per replica, plus two.
          rule: `!has(self.parameters) || !('${k}' in self.parameters) || (self.parameters['${k}'].matches('^[0-9]{1,9}$') && int(self.parameters['${k}']) >= self.instances + 1)`,
          message: `parameters.${k} must be a whole number of at least instances + 1`,
          fieldPath: `.parameters['${k}']`,
        })),
        {
          rule: `!has(self.parameters) || self.parameters.all(k, !(k.lowerAscii() in ${JSON.stringify(durabilityPostgresParameters).replaceAll('"', "'")}))`,
          message: `parameters must not set ${durabilityPostgresParameters.join(', ')}: with them a commit acknowledged to a client could be lost at failover, or a replica promoted behind`,
          fieldPath: '.parameters',
          reason: 'FieldValueForbidden',
        },
        {
          rule: '!has(self.appSecretRef) || !has(self.superuserSecretRef) || self.appSecretRef.name != self.superuserSecretRef.name || self.appSecretRef.key != self.superuserSecretRef.key',
          message: 'appSecretRef must not be the superuser password',
          fieldPath: '.appSecretRef',
        },
        {
          rule: '!has(self.switchoverTo) || self.instances > 1',
          message: 'switchoverTo needs at least 2 instances',
          fieldPath: '.switchoverTo',
        },
      ],
    },
  ),
  name: clusterName,
  rules: [
    {
      // operator/postgres/desired.ts instanceNames: <name>-0 ... <name>-<instances-1>.
      rule: "!has(self.spec.switchoverTo) || (self.spec.switchoverTo.startsWith(self.metadata.name + '-') && self.spec.switchoverTo.substring(size(self.metadata.name) + 1).matches('^[0-9]$') && int(self.spec.switchoverTo.substring(size(self.metadata.name) + 1)) < self.spec.instances)",
      message:
        'switchoverTo must name an instance of this cluster: <name>-<ordinal>, ordinal below instances',
      fieldPath: '.spec.switchoverTo',
    },
  ],
  status: obj('Observed state.', {
    observedGeneration: int('Generation the status describes.', { minimum: 0 }),
    currentPrimary: str('Pod that is primary now.'),
    timeline: int(
      'PostgreSQL timeline of the primary, as last seen healthy (a failover promotes only a replica of this timeline).',
      { minimum: 0 },
    ),
    synchronousStandbyNames: str(
      'synchronous_standby_names as the primary last confirmed it: a failover counts acknowledgements by the lower of this and spec.synchronous.number.',
      { maxLength: 1024 },
    ),
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
