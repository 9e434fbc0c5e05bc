import { Counter, Gauge } from 'prom-client';
import type { PostgresClusterStatus } from '../../common/resources/types.gen.js';
import { perRegistry } from '../runtime/metrics.js';
import type { ObjectKey } from '../runtime/types.js';

/** What a PostgreSQL operator is watched by: failovers, the primary's health, replica lag. */
export interface PostgresMetrics {
  failovers: Counter<'namespace' | 'cluster' | 'kind'>;
  primaryHealthy: Gauge<'namespace' | 'cluster'>;
  replicaLagBytes: Gauge<'namespace' | 'cluster' | 'instance'>;
}

export const postgresMetrics = perRegistry(
  (registers): PostgresMetrics => ({
    failovers: new Counter({
      name: 'nox_postgres_failovers_total',
      help: 'Primary changes by kind: failover (the primary was lost) or switchover (requested).',
      labelNames: ['namespace', 'cluster', 'kind'],
      registers,
    }),
    primaryHealthy: new Gauge({
      name: 'nox_postgres_primary_healthy',
      help: '1 while the designated primary is ready and accepts writes, else 0.',
      labelNames: ['namespace', 'cluster'],
      registers,
    }),
    replicaLagBytes: new Gauge({
      name: 'nox_postgres_replica_lag_bytes',
      help: 'WAL bytes a replica has not received yet, as last observed.',
      labelNames: ['namespace', 'cluster', 'instance'],
      registers,
    }),
  }),
);

/** The gauges of one cluster after a reconcile: the primary's health and each replica's lag. */
export function recordClusterMetrics(
  m: PostgresMetrics,
  key: ObjectKey,
  primaryHealthy: boolean,
  status: PostgresClusterStatus,
): void {
  const labels = { namespace: key.namespace, cluster: key.name };
  m.primaryHealthy.set(labels, primaryHealthy ? 1 : 0);
  for (const i of status.instances ?? [])
    if (i.pod && i.lagBytes !== undefined) m.replicaLagBytes.set({ ...labels, instance: i.pod }, i.lagBytes);
}

/** A deleted cluster's series, removed. */
export function forgetClusterMetrics(m: PostgresMetrics, key: ObjectKey): void {
  const labels = { namespace: key.namespace, cluster: key.name };
  m.primaryHealthy.remove(labels);
  for (const kind of ['failover', 'switchover']) m.failovers.remove({ ...labels, kind });
  // Instances are named <cluster>-<ordinal>; at most 9 (the schema's maximum).
  for (let i = 0; i < 9; i++) m.replicaLagBytes.remove({ ...labels, instance: `${key.name}-${i}` });
}
