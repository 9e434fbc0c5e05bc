import pg from 'pg';
import { maintainAuditPartitions, migrate } from '../../common/db/migrate.js';
import { describeError, type KubeClient } from '../../common/kube/client.js';
import { services } from '../../common/kube/resources.js';
import type { Logger } from '../../common/logger.js';
import type { PostgresClusterStatus } from '../../common/resources/types.gen.js';
import { type Condition, type ConditionInput, setCondition, timestamp } from '../runtime/conditions.js';
import { namesOf, POSTGRES_PORT } from './desired.js';
import type { Cluster } from './state.js';

/**
 * The schema aspect of a PostgresCluster with spec.migrations.enabled: Nox's migrations
 * (common/db/migrations) applied to spec.database through the -rw Service, as the database's
 * owner (so the tables belong to the role the sidecars connect as), once the cluster has a
 * primary that accepts writes.
 *
 * Idempotent twice over: `migrate` applies only what schema_migrations lacks, under an
 * advisory lock (several operator replicas or versions serialize), and this aspect runs it
 * once per primary and generation in this process: a settled cluster is not connected to on
 * every resync, but a new primary (a restored or replaced database) or a changed spec, or an
 * operator restart, checks again. A failure is retried on the next reconcile.
 *
 * The same connection keeps the audit tables' day partitions (maintainAuditPartitions: the
 * next days created, days past retention dropped), so the run is repeated at least hourly.
 *
 * The -rw Service is reached by its ClusterIP, read from the API: the address a pod's DNS
 * name resolves to, without depending on the operator's resolver.
 */

/** How often a settled cluster's schema is visited again (audit partitions roll daily). */
const MAINTENANCE_MS = 3_600_000;

export const SCHEMA_CONDITION = 'SchemaMigrated';

export interface SchemaInput {
  readonly cluster: Cluster;
  /** The designated primary accepts writes. */
  readonly primaryHealthy: boolean;
  readonly primary: string | undefined;
  /** The application role's password (spec.appSecretRef or the generated Secret). */
  readonly appPassword: string;
}

export interface SchemaMigrationsOptions {
  readonly client: KubeClient;
  readonly log: Logger;
  readonly now: () => Date;
  /** Where the migrations are (tests); default common/db's. */
  readonly dir?: string;
}

export class SchemaMigrations {
  readonly #opts: SchemaMigrationsOptions;
  /** Cluster key → `${primary}|${generation}` last migrated successfully by this process, and when. */
  readonly #done = new Map<string, { run: string; at: number }>();

  constructor(opts: SchemaMigrationsOptions) {
    this.#opts = opts;
  }

  /**
   * `status` with the SchemaMigrated condition and status.schema as this reconcile leaves
   * them; both removed when the spec does not ask for migrations.
   */
  async apply(input: SchemaInput, status: PostgresClusterStatus): Promise<PostgresClusterStatus> {
    const { cluster } = input;
    const conditions = (status.conditions ?? []) as Condition[];
    if (!cluster.spec.migrations?.enabled) {
      const { schema: _dropped, ...rest } = status;
      return { ...rest, conditions: conditions.filter((c) => c.type !== SCHEMA_CONDITION) as never };
    }
    const key = `${cluster.metadata.namespace}/${cluster.metadata.name}`;
    const generation = cluster.metadata.generation;
    const gen = generation !== undefined ? { observedGeneration: generation } : {};
    const previous = conditions.find((c) => c.type === SCHEMA_CONDITION);
    const set = (c: Omit<ConditionInput, 'type'>, schema = status.schema) => ({
      ...status,
      ...(schema ? { schema } : {}),
      conditions: setCondition(
        conditions,
        { type: SCHEMA_CONDITION, ...c, ...gen },
        this.#opts.now(),
      ) as never,
    });

    if (!input.primaryHealthy || !input.primary) {
      // A migrated schema stays migrated while a failover runs; only a never-migrated one waits.
      if (previous?.status === 'True') return status;
      return set({
        status: 'False',
        reason: 'MigrationsWaiting',
        message: 'waiting for a primary that accepts writes',
      });
    }
    const run = `${input.primary}|${generation ?? ''}`;
    const last = this.#done.get(key);
    const now = this.#opts.now().getTime();
    if (last?.run === run && now - last.at < MAINTENANCE_MS && previous?.status === 'True') return status;

    const log = this.#opts.log.child({ postgresCluster: key });
    try {
      const { applied, version } = await this.#migrate(cluster, input.appPassword, log);
      this.#done.set(key, { run, at: now });
      if (last?.run === run && previous?.status === 'True') return status;
      return set(
        {
          status: 'True',
          reason: 'Migrated',
          message: `schema at version ${version}; ${applied.length === 0 ? 'nothing to apply' : `applied ${applied.join(', ')}`}`,
        },
        { version, migratedAt: timestamp(new Date(now)) },
      );
    } catch (e) {
      this.#done.delete(key);
      const message = describeError(e);
      log.warn({ err: message }, 'schema migrations failed');
      return set({ status: 'False', reason: 'MigrationFailed', message });
    }
  }

  forget(key: { namespace: string; name: string }): void {
    this.#done.delete(`${key.namespace}/${key.name}`);
  }

  async #migrate(
    cluster: Cluster,
    password: string,
    log: Logger,
  ): Promise<{ applied: string[]; version: number }> {
    const namespace = cluster.metadata.namespace!;
    const rw = namesOf(cluster.metadata.name).rw;
    const svc = await this.#opts.client.get<{ metadata: { name: string }; spec?: { clusterIP?: string } }>(
      services,
      { namespace, name: rw },
    );
    const host = svc?.spec?.clusterIP;
    if (!host || host === 'None') throw new Error(`Service ${namespace}/${rw} has no ClusterIP yet`);
    const database = cluster.spec.database ?? { name: 'nox', owner: 'nox' };
    const client = new pg.Client({
      host,
      port: POSTGRES_PORT,
      user: database.owner,
      password,
      database: database.name,
      application_name: 'nox-operator-migrations',
      connectionTimeoutMillis: 3000,
      // A migration may rewrite a table; the advisory lock may wait for another replica's run.
      query_timeout: 120_000,
    });
    client.on('error', () => {}); // a dropped connection surfaces through the pending query
    try {
      await client.connect();
      const { applied } = await migrate(client, log, this.#opts.dir ? { dir: this.#opts.dir } : {});
      // Only where the schema has the audit log (a migrations directory of tests may not).
      const { rows: fn } = await client.query("SELECT to_regproc('nox_audit_maintain') IS NOT NULL AS has");
      if ((fn[0] as { has: boolean }).has) {
        const partitions = await maintainAuditPartitions(client);
        if (partitions.length > 0) log.info({ partitions }, 'audit partitions created and dropped');
      }
      // The database's version, which a newer operator may have taken further than this one knows.
      const { rows } = await client.query<{ v: number | null }>(
        'SELECT max(version) AS v FROM schema_migrations',
      );
      return { applied, version: Number(rows[0]?.v ?? 0) };
    } finally {
      await client.end().catch(() => {});
    }
  }
}
