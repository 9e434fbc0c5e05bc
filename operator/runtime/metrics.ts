import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** The operator's own metrics (the runtime's default metrics come from common/metrics.ts). */
export interface OperatorMetrics {
  reconciles: Counter<'kind' | 'result'>;
  reconcileSeconds: Histogram<'kind'>;
  queueDepth: Gauge<'kind'>;
  leader: Gauge;
  watchHealthy: Gauge<'resource'>;
  watchRestarts: Counter<'resource' | 'reason'>;
  watchObjects: Gauge<'resource'>;
}

/**
 * `make`'s metrics on a registry, made on first use and then shared: several components of
 * one process (the cache, controllers, elector, reconcilers) ask for them, and prom-client
 * refuses a second metric of the same name on a registry.
 */
export function perRegistry<M>(make: (registers: Registry[]) => M): (registry: Registry) => M {
  const byRegistry = new WeakMap<Registry, M>();
  return (registry) => {
    let m = byRegistry.get(registry);
    if (m === undefined) {
      m = make([registry]);
      byRegistry.set(registry, m);
    }
    return m;
  };
}

/** The metrics on `registry`, made on first use (the cache, controllers and elector share them). */
export const operatorMetrics = perRegistry((registers): OperatorMetrics => {
  const m: OperatorMetrics = {
    reconciles: new Counter({
      name: 'nox_operator_reconciles_total',
      help: 'Reconciles by kind and result: success, requeue (come back later), error (retried with backoff), terminal (reported in status, not retried).',
      labelNames: ['kind', 'result'],
      registers,
    }),
    reconcileSeconds: new Histogram({
      name: 'nox_operator_reconcile_seconds',
      help: 'Duration of one reconcile, by kind.',
      labelNames: ['kind'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    queueDepth: new Gauge({
      name: 'nox_operator_queue_depth',
      help: 'Keys waiting in the work queue (ready to run, not delayed), by kind.',
      labelNames: ['kind'],
      registers,
    }),
    leader: new Gauge({
      name: 'nox_operator_leader',
      help: '1 while this replica holds the leader Lease and runs the reconcilers, else 0.',
      registers,
    }),
    watchHealthy: new Gauge({
      name: 'nox_operator_watch_healthy',
      help: '1 while every list+watch of the resource is established, 0 while one is being re-established.',
      labelNames: ['resource'],
      registers,
    }),
    watchRestarts: new Counter({
      name: 'nox_operator_watch_restarts_total',
      help: 'List+watch restarts by resource and reason: error, expired (410 Gone: relisted), stalled.',
      labelNames: ['resource', 'reason'],
      registers,
    }),
    watchObjects: new Gauge({
      name: 'nox_operator_watch_objects',
      help: 'Objects of the resource in the operator’s cache.',
      labelNames: ['resource'],
      registers,
    }),
  };
  m.leader.set(0);
  return m;
});
