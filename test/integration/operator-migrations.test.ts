import type { KubeConfig } from '@kubernetes/client-node';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../common/db/migrate.js';
import type { PostgresCluster } from '../../common/resources/types.gen.js';
import type { Kube } from '../harness/kube.js';
import { getObject, kubeRequest, waitForObject } from '../harness/kubeHttp.js';
import { createNoxObject, type Kubelet, startNodeCluster } from '../harness/kubelet.js';
import { type KubeProxy, startKubeProxy } from '../harness/kubeProxy.js';
import { testLog } from '../harness/log.js';
import { type RunningOperator, startOperator } from '../harness/operator.js';

/**
 * PostgresCluster spec.migrations.enabled: the built nox-operator applies Nox's schema to the
 * application database through the -rw Service (real PostgreSQL run by the kubelet stand-in,
 * ClusterIPs routed by the kube-proxy stand-in), reports it in the SchemaMigrated condition
 * and status.schema, and a second run (a new operator process) applies nothing.
 */

const NS = 'pg-migrations';
const NAME = 'nox-db';
const clusterPath = `/apis/nox.dev/v1alpha1/namespaces/${NS}/postgresclusters/${NAME}`;
const migrations = loadMigrations();
const latest = migrations.at(-1)!.version;

interface AppliedRow {
  version: number;
  checksum: string;
  applied_at: Date;
}

describe('nox-operator applies the schema migrations to a PostgresCluster', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let kubelet: Kubelet;
  let proxy: KubeProxy;
  let op: RunningOperator;

  const get = <T>(path: string) => getObject<T>(kc, path);
  const schemaCondition = (c: PostgresCluster | undefined) =>
    c?.status?.conditions?.find((x) => x.type === 'SchemaMigrated');
  const waitStatus = (what: string, ok: (c: PostgresCluster | undefined) => boolean, timeoutMs: number) =>
    waitForObject<PostgresCluster>(kc, clusterPath, what, ok, timeoutMs, op.service);
  const secret = async (key: string) => {
    const s = await get<{ data: Record<string, string> }>(`/api/v1/namespaces/${NS}/secrets/${NAME}-app`);
    return Buffer.from(s!.data[key]!, 'base64').toString('utf8');
  };
  /** As the sidecar connects: the app Secret's user, password and database, through -rw's ClusterIP. */
  const asApplication = async <T>(sql: string): Promise<T[]> => {
    const svc = await get<{ spec: { clusterIP: string } }>(`/api/v1/namespaces/${NS}/services/${NAME}-rw`);
    const c = new pg.Client({
      host: svc!.spec.clusterIP,
      port: 5432,
      user: await secret('username'),
      password: await secret('password'),
      database: await secret('dbname'),
      connectionTimeoutMillis: 2000,
      query_timeout: 5000,
    });
    c.on('error', () => {});
    await c.connect();
    try {
      return (await c.query(sql)).rows as T[];
    } finally {
      await c.end().catch(() => {});
    }
  };
  const applied = () =>
    asApplication<AppliedRow>('SELECT version, checksum, applied_at FROM schema_migrations ORDER BY version');

  beforeAll(async () => {
    ({ kube, kc, kubelet } = await startNodeCluster(NS));
    proxy = await startKubeProxy(kube);
    op = await startOperator(kube, { name: 'nox-operator-migrations' });
    await createNoxObject(kc, 'postgresclusters', {
      kind: 'PostgresCluster',
      metadata: { name: NAME, namespace: NS },
      spec: { instances: 1, image: 'postgres:15', storage: { size: '1Gi' }, migrations: { enabled: true } },
    });
  }, 120_000);

  afterAll(async () => {
    await op?.service.stop();
    await proxy?.stop();
    await kubelet?.stopAll();
    await kube?.stop();
  });

  let first: AppliedRow[] = [];
  let firstCheck = '';

  it('reports SchemaMigrated=True with the latest version, and the schema is there, owned by the application role', async () => {
    const t0 = Date.now();
    const c = await waitStatus('SchemaMigrated=True', (x) => schemaCondition(x)?.status === 'True', 180_000);
    testLog(`SchemaMigrated=True ${Date.now() - t0} ms after the PostgresCluster was created`);
    const cond = schemaCondition(c)!;
    expect(cond).toMatchObject({
      reason: 'Migrated',
      observedGeneration: c.metadata.generation,
      message: `schema at version ${latest}; applied ${migrations.map((m) => m.id).join(', ')}`,
    });
    expect(c.status?.schema?.version).toBe(latest);
    expect(Date.parse(c.status?.schema?.migratedAt ?? '')).not.toBeNaN();
    firstCheck = c.status!.schema!.migratedAt!;

    first = await applied();
    expect(first.map((r) => [r.version, r.checksum])).toEqual(migrations.map((m) => [m.version, m.checksum]));
    const tables = await asApplication<{ tablename: string; tableowner: string }>(
      "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    );
    expect(tables.map((t) => t.tablename)).toEqual(
      expect.arrayContaining(['users', 'sessions', 'audit_decisions', 'quota_overrides', 'risk_events']),
    );
    // The sidecar connects as the owner role: the tables are its own, not the superuser's.
    expect(new Set(tables.map((t) => t.tableowner))).toEqual(new Set([await secret('username')]));
  }, 240_000);

  it('a second run (a new operator process) applies nothing and keeps the condition', async () => {
    const before = schemaCondition(await get<PostgresCluster>(clusterPath))!;
    await op.service.stop();
    op = await startOperator(kube, { name: 'nox-operator-migrations-2' });
    const c = await waitStatus(
      'a new check of the schema',
      (x) => !!x?.status?.schema?.migratedAt && x.status.schema.migratedAt !== firstCheck,
      120_000,
    );
    const cond = schemaCondition(c)!;
    expect(cond).toMatchObject({
      status: 'True',
      reason: 'Migrated',
      message: `schema at version ${latest}; nothing to apply`,
    });
    // Still True since the first run: the transition time did not move.
    expect(cond.lastTransitionTime).toBe(before.lastTransitionTime);
    expect(c.status?.schema?.version).toBe(latest);
    const again = await applied();
    expect(again.map((r) => [r.version, r.checksum, r.applied_at.toISOString()])).toEqual(
      first.map((r) => [r.version, r.checksum, r.applied_at.toISOString()]),
    );
  }, 180_000);

  it('disabling migrations removes the condition and status.schema; the schema stays', async () => {
    const r = await kubeRequest(kc, 'PATCH', clusterPath, {
      body: JSON.stringify({ spec: { migrations: { enabled: false } } }),
      contentType: 'application/merge-patch+json',
    });
    expect(r.status).toBe(200);
    const c = await waitStatus(
      'no SchemaMigrated condition',
      (x) =>
        x?.status?.observedGeneration === x?.metadata.generation &&
        !schemaCondition(x) &&
        x?.status?.schema === undefined,
      60_000,
    );
    expect(c.status?.conditions?.map((x) => x.type).sort()).toEqual(['Accepted', 'Degraded', 'Ready']);
    expect((await applied()).length).toBe(migrations.length);
  }, 90_000);
});
