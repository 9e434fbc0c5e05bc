import type { Gauge, Registry } from 'prom-client';
import type { BackoffOptions } from '../../common/backoff.js';
import { apiVersionOf, type KubeClient, type KubeObject } from '../../common/kube/client.js';
import { Informer, startAndSync, watchMetrics } from '../../common/kube/informer.js';
import type { Logger } from '../../common/logger.js';
import {
  type ConfigSource,
  counterOn,
  DEFAULT_DEBOUNCE_MS,
  Debouncer,
  deepFreeze,
  gaugeOn,
  objectsGauge,
  type RawResource,
  type ResourceKind,
  type SourceState,
  StatePublisher,
} from './source.js';

export interface KubeSourceOptions {
  client: KubeClient;
  /** Custom resource kinds (a non-empty group). */
  kinds: readonly ResourceKind[];
  /** Namespaces to read; empty: all namespaces. */
  namespaces: readonly string[];
  log: Logger;
  registry: Registry;
  /** start() rejects if the first list of every kind has not succeeded by then. Default 60 s. */
  startTimeoutMs?: number;
  debounceMs?: number;
  backoff?: BackoffOptions;
  /** Server-side timeout of one watch request, plus up to 50% jitter. Default 300 s. */
  watchTimeoutSeconds?: number;
  /** A list page that has not arrived by then is abandoned and retried. Default 30 s. */
  requestTimeoutMs?: number;
}

type CachedResource = RawResource & KubeObject;

/**
 * In-cluster mode: one informer (common/kube) per kind over the served namespaces; every
 * change is debounced into one complete state for the compiler. While a watch is broken
 * the informer keeps its last objects, so the policies in force stay as they were.
 */
export class KubeSource implements ConfigSource {
  readonly #opts: KubeSourceOptions;
  readonly #log: Logger;
  readonly #informers: Informer<CachedResource>[];
  readonly #abort = new AbortController();
  readonly #debouncer: Debouncer;
  readonly #objects: Gauge<'kind'>;
  #publisher: StatePublisher | undefined;
  #synced = false;

  constructor(opts: KubeSourceOptions) {
    this.#opts = opts;
    this.#log = opts.log.child({ component: 'config-source', source: 'k8s' });
    this.#debouncer = new Debouncer(opts.debounceMs ?? DEFAULT_DEBOUNCE_MS, () => this.#publish());
    const r = opts.registry;
    const healthy = gaugeOn(
      r,
      'nox_config_watch_healthy',
      '1 while every list+watch of the kind is established, 0 while one is being re-established.',
      ['kind'],
    );
    const restarts = counterOn(
      r,
      'nox_config_watch_restarts_total',
      'List+watch restarts by kind and reason: error, expired (410 Gone: relisted), stalled.',
      ['kind', 'reason'],
    );
    this.#objects = objectsGauge(r);
    this.#informers = opts.kinds.map((kind) => {
      if (!kind.group) throw new Error(`KubeSource serves custom resources only; ${kind.kind} has no group`);
      const informer = new Informer<CachedResource>({
        client: opts.client,
        resource: { ...kind, namespaced: kind.namespaced !== false },
        namespaces: opts.namespaces,
        transform: (obj) => toRawResource(kind, obj),
        log: this.#log,
        metrics: watchMetrics({ healthy, restarts }, { kind: kind.kind }),
        ...(opts.backoff ? { backoff: opts.backoff } : {}),
        ...(opts.watchTimeoutSeconds ? { watchTimeoutSeconds: opts.watchTimeoutSeconds } : {}),
        ...(opts.requestTimeoutMs ? { requestTimeoutMs: opts.requestTimeoutMs } : {}),
      });
      informer.addHandler(() => {
        if (this.#synced) this.#debouncer.trigger();
      });
      return informer;
    });
  }

  async start(onState: (state: SourceState) => void): Promise<void> {
    if (this.#publisher || this.#abort.signal.aborted) throw new Error('KubeSource already started');
    this.#publisher = new StatePublisher(onState, this.#log);
    await startAndSync(
      this.#informers,
      this.#abort,
      this.#opts.startTimeoutMs ?? 60_000,
      this.#opts.kinds.map((k) => k.plural).join(', '),
    );
    this.#synced = true;
    this.#publish();
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    this.#debouncer.cancel();
    await Promise.all(this.#informers.map((i) => i.stopped()));
  }

  healthy(): boolean {
    return !this.#abort.signal.aborted && this.#informers.every((i) => i.healthy);
  }

  #publish(): void {
    if (this.#abort.signal.aborted || !this.#publisher) return;
    const resources: RawResource[] = this.#informers.flatMap((i) => i.list());
    const sortKey = (r: RawResource) => `${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`;
    resources.sort((a, b) => (sortKey(a) < sortKey(b) ? -1 : 1));
    if (!this.#publisher.publish({ resources, problems: [] })) return;
    for (const kind of this.#opts.kinds) {
      this.#objects.set({ kind: kind.kind }, resources.filter((r) => r.kind === kind.kind).length);
    }
    this.#log.info({ resources: resources.length }, 'configuration state delivered');
  }
}

/** What the compiler needs of an object, frozen: it is shared between states. */
function toRawResource(kind: ResourceKind, obj: KubeObject & { spec?: unknown }): CachedResource {
  const m = obj.metadata;
  const raw: CachedResource = {
    apiVersion: obj.apiVersion ?? apiVersionOf(kind),
    kind: obj.kind ?? kind.kind,
    metadata: {
      name: m.name,
      ...(m.namespace ? { namespace: m.namespace } : {}),
      ...(m.generation !== undefined ? { generation: m.generation } : {}),
      ...(m.resourceVersion ? { resourceVersion: m.resourceVersion } : {}),
      ...(m.uid ? { uid: m.uid } : {}),
      ...(m.labels ? { labels: m.labels } : {}),
      ...(m.creationTimestamp ? { creationTimestamp: String(m.creationTimestamp) } : {}),
    },
    ...(obj.spec !== undefined ? { spec: obj.spec } : {}),
    origin: 'k8s',
  };
  return deepFreeze(raw);
}
