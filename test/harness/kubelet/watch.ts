import { mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { KubeClient, type KubeObject, type ResourceType } from '../../../common/kube/client.js';
import { Informer, type InformerMetrics } from '../../../common/kube/informer.js';

import { createLogger, type Logger } from '../../../common/logger.js';
import { runDir } from '../tools.js';

/**
 * The stand-ins (kubelet, cluster DNS, kube-proxy) watch the API server through the same
 * Informer as the sidecar and the operator: one list+watch loop in the repository, so the
 * stand-ins see relists, 410s and stalls handled exactly as the programs under test do.
 */

/** The stand-ins export no metrics. */
const noMetrics: InformerMetrics = { healthy: () => {}, restarted: () => {}, objects: () => {} };

const clients = new WeakMap<KubeConfig, KubeClient>();
const clientFor = (kc: KubeConfig) => {
  let c = clients.get(kc);
  if (!c) {
    c = new KubeClient(kc, { fieldManager: 'nox-test-standins' });
    clients.set(kc, c);
  }
  return c;
};

let logFd: number | undefined;
/**
 * The informers' own log (restarts, relists, errors), one file for every stand-in of the
 * process: .run/logs/standins-watch.log. Never closed: a stream may still log as it winds down.
 */
function watchLog(label: string): Logger {
  if (logFd === undefined) {
    const dir = join(runDir, 'logs');
    mkdirSync(dir, { recursive: true });
    logFd = openSync(join(dir, 'standins-watch.log'), 'a');
  }
  return createLogger(label, { level: process.env.NOX_LOG_LEVEL ?? 'info', destination: logFd });
}

export interface WatchOptions {
  labelSelector?: string;
  fieldSelector?: string;
}

/**
 * A started Informer of `resource` over all namespaces; `onChange` is called after every
 * change is in its cache. Stops when `signal` aborts.
 */
export function watchAll<T extends KubernetesObject>(
  kc: KubeConfig,
  resource: ResourceType,
  selectors: WatchOptions,
  signal: AbortSignal,
  label: string,
  onChange: (type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: T) => void = () => {},
): Informer<KubeObject> {
  const informer = new Informer<KubeObject>({
    client: clientFor(kc),
    resource,
    namespaces: [],
    ...selectors,
    log: watchLog(label),
    metrics: noMetrics,
    // A stand-in must notice an API server restart within a test's patience.
    backoff: { initialMs: 100, maxMs: 1000 },
  });
  const kind = { added: 'ADDED', updated: 'MODIFIED', deleted: 'DELETED' } as const;
  informer.addHandler((e) => onChange(kind[e.type], e.object as unknown as T));
  informer.start(signal);
  return informer;
}

/** The cache key the stand-ins use: `namespace/name`. */
export const keyOf = (o: KubernetesObject) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

/** Objects of an informer as client-node types. */
export const itemsOf = <T extends KubernetesObject>(informer: Informer<KubeObject>): T[] =>
  informer.list() as unknown as T[];

/** One object by its `namespace/name` key. */
export function itemOf<T extends KubernetesObject>(
  informer: Informer<KubeObject>,
  key: string,
): T | undefined {
  const slash = key.indexOf('/');
  return informer.get({ namespace: key.slice(0, slash), name: key.slice(slash + 1) }) as unknown as
    | T
    | undefined;
}
