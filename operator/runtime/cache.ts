import type { Registry } from 'prom-client';
import type { BackoffOptions } from '../../common/backoff.js';
import {
  describeType,
  type KubeClient,
  type KubeObject,
  type ResourceType,
} from '../../common/kube/client.js';
import { Informer, watchMetrics } from '../../common/kube/informer.js';
import type { Logger } from '../../common/logger.js';
import { type OperatorMetrics, operatorMetrics } from './metrics.js';

export interface CacheOptions {
  client: KubeClient;
  /** Namespaces the operator serves; empty: all. */
  namespaces: readonly string[];
  log: Logger;
  registry: Registry;
  backoff?: BackoffOptions;
  watchTimeoutSeconds?: number;
  requestTimeoutMs?: number;
}

export interface InformerRequest<T extends KubeObject> {
  transform?: (obj: KubeObject) => T;
  /** Required with `transform`: names this view of the resource (e.g. "keys"). */
  variant?: string;
  labelSelector?: string;
}

/**
 * The shared informers of one operator process: one list+watch per resource type (and
 * variant), however many controllers read it. Reconcilers read the world from here, not
 * from the API server, as controller-runtime's client does. The cache runs on every
 * replica, leader or not, so a replica that takes over starts with warm caches.
 */
export class Cache {
  readonly #opts: CacheOptions;
  readonly #informers = new Map<string, Informer<KubeObject>>();
  readonly #metrics: OperatorMetrics;
  #signal: AbortSignal | undefined;

  constructor(opts: CacheOptions) {
    this.#opts = opts;
    this.#metrics = operatorMetrics(opts.registry);
  }

  /** The informer of `resource` (created on first use; started at once if the cache runs). */
  informer<T extends KubeObject = KubeObject>(
    resource: ResourceType,
    req: InformerRequest<T> = {},
  ): Informer<T> {
    if (req.transform && !req.variant) throw new Error('an informer with a transform needs a variant name');
    const id = `${describeType(resource)}|${req.variant ?? ''}|${req.labelSelector ?? ''}`;
    let inf = this.#informers.get(id);
    if (!inf) {
      const o = this.#opts;
      const m = this.#metrics;
      const label = `${describeType(resource)}${req.variant ? `/${req.variant}` : ''}`;
      inf = new Informer<KubeObject>({
        client: o.client,
        resource,
        namespaces: o.namespaces,
        log: o.log.child({ component: 'informer' }),
        metrics: watchMetrics(
          { healthy: m.watchHealthy, restarts: m.watchRestarts, objects: m.watchObjects },
          { resource: label },
        ),
        ...(req.transform ? { transform: req.transform as (obj: KubeObject) => KubeObject } : {}),
        ...(req.variant ? { variant: req.variant } : {}),
        ...(req.labelSelector ? { labelSelector: req.labelSelector } : {}),
        ...(o.backoff ? { backoff: o.backoff } : {}),
        ...(o.watchTimeoutSeconds ? { watchTimeoutSeconds: o.watchTimeoutSeconds } : {}),
        ...(o.requestTimeoutMs ? { requestTimeoutMs: o.requestTimeoutMs } : {}),
      });
      this.#informers.set(id, inf);
      if (this.#signal) inf.start(this.#signal);
    }
    return inf as unknown as Informer<T>;
  }

  start(signal: AbortSignal): void {
    if (this.#signal) return;
    this.#signal = signal;
    for (const inf of this.#informers.values()) inf.start(signal);
  }

  get synced(): boolean {
    return [...this.#informers.values()].every((i) => i.synced);
  }

  get healthy(): boolean {
    return [...this.#informers.values()].every((i) => i.healthy);
  }

  problems(): string[] {
    return [...this.#informers.values()].flatMap((i) => i.describeProblems());
  }

  async whenSynced(): Promise<void> {
    await Promise.all([...this.#informers.values()].map((i) => i.whenSynced()));
  }

  async stopped(): Promise<void> {
    await Promise.all([...this.#informers.values()].map((i) => i.stopped()));
  }
}
