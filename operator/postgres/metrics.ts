import { Counter, Gauge, type Registry } from 'prom-client';

/** What a PostgreSQL operator is watched by: failovers, the primary's health, replica lag. */
export interface PostgresMetrics {
  failovers: Counter<'namespace' | 'cluster' | 'kind'>;
  primaryHealthy: Gauge<'namespace' | 'cluster'>;
  replicaLagBytes: Gauge<'namespace' | 'cluster' | 'instance'>;
}

const byRegistry = new WeakMap<Registry, PostgresMetrics>();

export function postgresMetrics(registry: Registry): PostgresMetrics {
  let m = byRegistry.get(registry);
  if (m) return m;
  const registers = [registry];
  m = {
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
  };
  byRegistry.set(registry, m);
  return m;
}
