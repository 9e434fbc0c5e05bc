import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { KubeClient } from '../../common/kube/client.js';
import type { PostgresClusterStatus } from '../../common/resources/types.gen.js';
import { SCHEMA_CONDITION, SchemaMigrations } from './schema.js';
import type { Cluster } from './state.js';

/**
 * The schema aspect's decisions that need no database: no condition without the opt-in, a
 * wait without a primary, a migrated schema kept through a failover. Applying migrations
 * against real PostgreSQL: test/integration/operator-migrations.test.ts.
 */

const now = new Date('2026-12-07T00:00:00Z');
// No call may reach the API server in these cases: a client that fails on any use.
const unusedClient = new Proxy({} as KubeClient, {
  get: (_t, prop) => () => {
    throw new Error(`KubeClient.${String(prop)} called`);
  },
});
const aspect = () =>
  new SchemaMigrations({ client: unusedClient, log: pino({ level: 'silent' }), now: () => now });

function cluster(enabled: boolean | undefined): Cluster {
  return {
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'PostgresCluster',
    metadata: { name: 'db', namespace: 'ns', generation: 4 },
    spec: { instances: 1, ...(enabled === undefined ? {} : { migrations: { enabled } }) },
  } as unknown as Cluster;
}

const migrated: PostgresClusterStatus = {
  schema: { version: 5, migratedAt: '2026-12-06T00:00:00Z' },
  conditions: [
    {
      type: 'Ready',
      status: 'True',
      reason: 'Healthy',
      message: 'ok',
      lastTransitionTime: '2026-12-06T00:00:00Z',
    },
    {
      type: SCHEMA_CONDITION,
      status: 'True',
      reason: 'Migrated',
      message: 'schema at version 5; nothing to apply',
      lastTransitionTime: '2026-12-06T00:00:00Z',
    },
  ],
} as PostgresClusterStatus;

describe('schema migrations aspect', () => {
  it('without spec.migrations.enabled: no SchemaMigrated condition and no status.schema, whatever was there', async () => {
    for (const enabled of [undefined, false]) {
      const status = await aspect().apply(
        { cluster: cluster(enabled), primaryHealthy: true, primary: 'db-0', appPassword: 'x' },
        migrated,
      );
      expect(status.schema).toBeUndefined();
      expect(status.conditions?.map((c) => c.type)).toEqual(['Ready']);
    }
  });

  it('waits for a primary that accepts writes before the first migration', async () => {
    const status = await aspect().apply(
      { cluster: cluster(true), primaryHealthy: false, primary: 'db-0', appPassword: 'x' },
      { conditions: [] } as PostgresClusterStatus,
    );
    expect(status.conditions).toEqual([
      {
        type: SCHEMA_CONDITION,
        status: 'False',
        reason: 'MigrationsWaiting',
        message: 'waiting for a primary that accepts writes',
        observedGeneration: 4,
        lastTransitionTime: '2026-12-07T00:00:00Z',
      },
    ]);
  });

  it('keeps a migrated schema as it was while the primary is lost (a failover does not unmigrate it)', async () => {
    const status = await aspect().apply(
      { cluster: cluster(true), primaryHealthy: false, primary: undefined, appPassword: 'x' },
      migrated,
    );
    expect(status).toEqual(migrated);
  });
});
