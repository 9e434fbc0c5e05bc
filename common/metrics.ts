import { collectDefaultMetrics, Registry } from 'prom-client';

/** One registry per process, with the runtime's default metrics under the program's prefix. */
export function createRegistry(program: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ program });
  collectDefaultMetrics({ register: registry, prefix: 'nox_' });
  return registry;
}
