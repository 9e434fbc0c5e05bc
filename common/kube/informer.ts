import type { Counter, Gauge } from 'prom-client';
import { type BackoffOptions, backoffDelay, sleep } from '../backoff.js';
import type { Logger } from '../logger.js';
import {
  apiVersionOf,
  describeError,
  describeType,
  KubeApiError,
  type KubeClient,
  type KubeObject,
  type ResourceType,
  type WatchEvent,
} from './client.js';

/**
 * A cache of one resource type kept current by list + watch, with change notifications:
 * the one list+watch loop of Nox (the sidecar's policies and Secrets, the operator's caches,
 * the test harness's kubelet stand-in).
 *
 * client-node's informer can stop for good on an error (STYLE.md §3), so every stream is a
 * loop of our own that always restarts with jittered backoff, relists on 410 Gone (and
 * then reports what changed while it was not watching, deletions included), asks for
 * bookmarks, and treats a watch that outlives its own server-side timeout as dead. While a
 * stream is broken the cache keeps its last objects and `healthy` is false.
 */

export type InformerEvent<T> =
  | { readonly type: 'added'; readonly object: T }
  | { readonly type: 'updated'; readonly object: T; readonly old: T }
  | { readonly type: 'deleted'; readonly object: T };

export type InformerHandler<T> = (event: InformerEvent<T>) => void;

export type RestartReason = 'error' | 'expired' | 'stalled';

/** What an informer reports; each program names its own metrics (see `watchMetrics`). */
export interface InformerMetrics {
  healthy(ok: boolean): void;
  restarted(reason: RestartReason): void;
  objects(count: number): void;
}

/** InformerMetrics on prom-client metrics, every sample carrying `labels`. */
export function watchMetrics<L extends string>(
  metrics: {
    healthy: Gauge<L>;
    restarts: Counter<L | 'reason'>;
    objects?: Gauge<L>;
  },
  labels: Partial<Record<L, string>>,
): InformerMetrics {
  return {
    healthy: (ok) => metrics.healthy.set(labels, ok ? 1 : 0),
    restarted: (reason) =>
      metrics.restarts.inc({ ...labels, reason } as Partial<Record<L | 'reason', string>>),
    objects: (count) => metrics.objects?.set(labels, count),
  };
}

export interface InformerOptions<T extends KubeObject> {
  client: KubeClient;
  resource: ResourceType;
  /** Namespaces to watch (one stream each); empty: one stream over all namespaces. */
  namespaces: readonly string[];
  labelSelector?: string;
  fieldSelector?: string;
  /**
   * What the cache keeps of each object (e.g. only the key names of a Secret, the digest
   * of a ConfigMap's model); default the object itself. Must keep `metadata`.
   */
  transform?: (obj: KubeObject) => T;
  /** Distinguishes two informers of one resource with different transforms, in metrics and logs. */
  variant?: string;
  log: Logger;
  metrics: InformerMetrics;
  backoff?: BackoffOptions;
  /** Server-side timeout of one watch request, plus up to 50% jitter. Default 300 s. */
  watchTimeoutSeconds?: number;
  /** A list page that has not arrived by then is abandoned and retried. Default 30 s. */
  requestTimeoutMs?: number;
}

/** 410 Gone: the resourceVersion we hold is older than the server's history, so only a relist helps. */
class Expired extends Error {}
/** The watch sent nothing, not even its end, for longer than it promised: the connection is dead. */
class Stalled extends Error {}

export class Informer<T extends KubeObject = KubeObject> {
  readonly resource: ResourceType;
  /** `secrets`, `quotapolicies.nox.dev`, `secrets/keys`: the label in metrics. */
  readonly label: string;
  readonly #opts: InformerOptions<T>;
  readonly #byNamespace = new Map<string, Map<string, T>>();
  // Typed loosely so that an Informer<SecretSummary> is usable as an Informer<KubeObject>.
  readonly #handlers = new Set<(event: never) => void>();
  readonly #streams: Stream<T>[];
  #runs: Promise<void>[] = [];
  #started = false;
  #syncWaiters: (() => void)[] = [];
  #count = 0;

  constructor(opts: InformerOptions<T>) {
    this.#opts = opts;
    this.resource = opts.resource;
    this.label = `${describeType(opts.resource)}${opts.variant ? `/${opts.variant}` : ''}`;
    const scopes =
      !opts.resource.namespaced || opts.namespaces.length === 0 ? [undefined] : [...opts.namespaces];
    this.#streams = scopes.map((ns) => new Stream<T>(this, ns, opts));
    opts.metrics.healthy(false);
  }

  get synced(): boolean {
    return this.#streams.every((s) => s.synced);
  }

  get healthy(): boolean {
    return this.#streams.every((s) => s.healthy);
  }

  /** Why it is not synced or not healthy, for /readyz and logs. */
  describeProblems(): string[] {
    return this.#streams
      .filter((s) => !s.synced || !s.healthy)
      .map(
        (s) =>
          `${this.label} in ${s.namespace ?? 'all namespaces'}: ${s.lastError ?? (s.synced ? 'watch reconnecting' : 'not listed yet')}`,
      );
  }

  whenSynced(): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => this.#syncWaiters.push(resolve));
  }

  get(key: { namespace?: string | undefined; name: string }): T | undefined {
    return this.#byNamespace.get(key.namespace ?? '')?.get(key.name);
  }

  /** Objects of one namespace, or of all. */
  list(namespace?: string): T[] {
    if (namespace !== undefined) return [...(this.#byNamespace.get(namespace)?.values() ?? [])];
    return [...this.#byNamespace.values()].flatMap((m) => [...m.values()]);
  }

  get size(): number {
    return this.#count;
  }

  /** Notified of every change after it is in the cache; returns the unsubscribe function. */
  addHandler(handler: InformerHandler<T>): () => void {
    this.#handlers.add(handler);
    return () => {
      this.#handlers.delete(handler);
    };
  }

  start(signal: AbortSignal): void {
    if (this.#started) return;
    this.#started = true;
    this.#runs = this.#streams.map((s) => s.run(signal));
  }

  /** Resolves when every stream loop has ended (after the signal given to start() aborted). */
  async stopped(): Promise<void> {
    await Promise.allSettled(this.#runs);
  }

  // --- called by the streams ---

  /** @internal */
  replaceScope(namespace: string | undefined, fresh: Map<string, T>): void {
    const keyOf = (o: T) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    const inScope = namespace === undefined ? this.list() : this.list(namespace);
    for (const old of inScope) {
      if (!fresh.has(keyOf(old))) this.remove(old);
    }
    for (const obj of fresh.values()) this.upsert(obj);
  }

  /** @internal */
  upsert(obj: T): void {
    const ns = obj.metadata.namespace ?? '';
    let m = this.#byNamespace.get(ns);
    if (!m) {
      m = new Map();
      this.#byNamespace.set(ns, m);
    }
    const old = m.get(obj.metadata.name);
    if (
      old &&
      old.metadata.resourceVersion === obj.metadata.resourceVersion &&
      old.metadata.uid === obj.metadata.uid
    )
      return;
    m.set(obj.metadata.name, obj);
    if (!old) this.#setCount(this.#count + 1);
    this.#emit(old ? { type: 'updated', object: obj, old } : { type: 'added', object: obj });
  }

  /** @internal */
  remove(obj: T): void {
    const ns = obj.metadata.namespace ?? '';
    const m = this.#byNamespace.get(ns);
    const old = m?.get(obj.metadata.name);
    if (!m || !old) return;
    m.delete(obj.metadata.name);
    if (m.size === 0) this.#byNamespace.delete(ns);
    this.#setCount(this.#count - 1);
    this.#emit({ type: 'deleted', object: old });
  }

  /** @internal */
  healthChanged(): void {
    this.#opts.metrics.healthy(this.healthy);
    if (this.synced && this.#syncWaiters.length > 0) {
      const waiters = this.#syncWaiters;
      this.#syncWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** @internal */
  restarted(reason: RestartReason): void {
    this.#opts.metrics.restarted(reason);
  }

  #setCount(n: number): void {
    this.#count = n;
    this.#opts.metrics.objects(n);
  }

  #emit(event: InformerEvent<T>): void {
    for (const h of this.#handlers as Set<InformerHandler<T>>) {
      try {
        h(event);
      } catch (e) {
        this.#opts.log.error({ resource: this.label, err: describeError(e) }, 'informer handler threw');
      }
    }
  }
}

/** One list+watch of one resource in one namespace (or all of them). */
class Stream<T extends KubeObject> {
  synced = false;
  healthy = false;
  lastError: string | undefined;
  #resourceVersion = '';
  #failures = 0;
  #lastExpiredAt = 0;
  readonly #log: Logger;

  constructor(
    private readonly informer: Informer<T>,
    readonly namespace: string | undefined,
    private readonly opts: InformerOptions<T>,
  ) {
    this.#log = opts.log.child({ resource: informer.label, namespace: namespace ?? '*' });
  }

  async run(signal: AbortSignal): Promise<void> {
    const backoff = this.opts.backoff ?? {};
    while (!signal.aborted) {
      try {
        if (!this.#resourceVersion) await this.#list(signal);
        const openedAt = Date.now();
        await this.#watch(signal);
        // A server that closes watches at once must not make us hammer it.
        if (Date.now() - openedAt < 1000) await sleep(backoffDelay(this.#failures++, backoff), signal);
      } catch (e) {
        if (signal.aborted) break;
        const reason: RestartReason =
          e instanceof Expired ? 'expired' : e instanceof Stalled ? 'stalled' : 'error';
        this.informer.restarted(reason);
        this.lastError = describeError(e);
        if (reason === 'expired') {
          this.#log.info({ err: this.lastError }, 'resourceVersion expired; relisting');
          this.#resourceVersion = '';
          // Relist at once, unless the previous relist expired too (then it is a loop; back off).
          const recent = Date.now() - this.#lastExpiredAt < 5000;
          this.#lastExpiredAt = Date.now();
          if (!recent) continue;
        } else {
          this.#setHealthy(false);
        }
        const delayMs = backoffDelay(this.#failures++, backoff);
        this.#log.warn(
          { err: this.lastError, reason, attempt: this.#failures, delayMs },
          'list+watch failed; retrying',
        );
        await sleep(delayMs, signal);
      }
    }
    this.#setHealthy(false);
  }

  #setHealthy(ok: boolean): void {
    if (this.healthy === ok) return;
    this.healthy = ok;
    this.informer.healthChanged();
  }

  #transform(obj: KubeObject): T {
    return this.opts.transform ? this.opts.transform(obj) : (obj as T);
  }

  async #list(signal: AbortSignal): Promise<void> {
    const { client, resource, labelSelector, fieldSelector } = this.opts;
    let list: Awaited<ReturnType<KubeClient['list']>>;
    try {
      list = await client.list(resource, {
        ...(this.namespace ? { namespace: this.namespace } : {}),
        ...(labelSelector ? { labelSelector } : {}),
        ...(fieldSelector ? { fieldSelector } : {}),
        signal,
        timeoutMs: this.opts.requestTimeoutMs ?? 30_000,
      });
    } catch (e) {
      if (e instanceof KubeApiError && e.code === 410) throw new Expired(describeError(e));
      throw e;
    }
    const fresh = new Map<string, T>();
    for (const item of list.items) {
      if (!item.metadata?.name) continue;
      // Lists do not carry apiVersion/kind on their items.
      const obj = this.#transform({ ...item, apiVersion: apiVersionOf(resource), kind: resource.kind });
      fresh.set(`${obj.metadata.namespace ?? ''}/${obj.metadata.name}`, obj);
    }
    this.informer.replaceScope(this.namespace, fresh);
    this.#resourceVersion = list.metadata.resourceVersion ?? '';
    this.#log.debug({ objects: fresh.size, resourceVersion: this.#resourceVersion }, 'listed');
    this.lastError = undefined;
    this.#failures = 0;
    this.synced = true;
    this.#setHealthy(true);
  }

  /** Resolves when the server ends the watch normally; rejects with Expired, Stalled or the error. */
  #watch(signal: AbortSignal): Promise<void> {
    const timeoutSeconds = Math.round((this.opts.watchTimeoutSeconds ?? 300) * (1 + Math.random() / 2));
    if (signal.aborted) return Promise.resolve();
    const stream = new AbortController();
    const stop = () => stream.abort();
    signal.addEventListener('abort', stop, { once: true });
    let failure: Error | undefined;
    const fail = (e: Error) => {
      failure ??= e;
      stream.abort();
    };
    const stallTimer = setTimeout(
      () => fail(new Stalled(`no end of watch after ${timeoutSeconds + 30} s`)),
      (timeoutSeconds + 30) * 1000,
    );
    const onEvent = (e: WatchEvent) => {
      if (failure) return;
      const obj = e.object;
      if (e.type === 'ERROR') {
        const why = `watch error event ${obj.code}: ${obj.message}`;
        fail(obj.code === 410 ? new Expired(why) : new Error(why));
        return;
      }
      if (obj?.metadata?.resourceVersion) this.#resourceVersion = obj.metadata.resourceVersion;
      if (e.type === 'BOOKMARK' || !obj?.metadata?.name) return;
      const full = {
        ...obj,
        apiVersion: obj.apiVersion ?? apiVersionOf(this.opts.resource),
        kind: obj.kind ?? this.opts.resource.kind,
      };
      if (e.type === 'DELETED') this.informer.remove(this.#transform(full));
      else this.informer.upsert(this.#transform(full));
    };
    return this.opts.client
      .watch(this.opts.resource, {
        ...(this.namespace ? { namespace: this.namespace } : {}),
        ...(this.opts.labelSelector ? { labelSelector: this.opts.labelSelector } : {}),
        ...(this.opts.fieldSelector ? { fieldSelector: this.opts.fieldSelector } : {}),
        resourceVersion: this.#resourceVersion,
        timeoutSeconds,
        signal: stream.signal,
        onOpen: () => {
          // The server answered 200: the watch is established.
          this.#failures = 0;
          this.lastError = undefined;
          this.#setHealthy(true);
        },
        onEvent,
      })
      .catch((e: unknown) => {
        if (e instanceof KubeApiError && e.code === 410) throw new Expired(describeError(e));
        throw e;
      })
      .then(() => {
        if (failure) throw failure;
      })
      .finally(() => {
        clearTimeout(stallTimer);
        signal.removeEventListener('abort', stop);
      });
  }
}

/**
 * Starts `informers` and resolves once every one has listed; rejects after `timeoutMs` with
 * what is still missing (a 403 names the RBAC problem), stopping them first.
 */
export async function startAndSync(
  informers: readonly Informer<KubeObject>[],
  abort: AbortController,
  timeoutMs: number,
  what: string,
): Promise<void> {
  for (const inf of informers) inf.start(abort.signal);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const outcome = await Promise.race([Promise.all(informers.map((i) => i.whenSynced())), timedOut]);
  clearTimeout(timer);
  if (outcome !== 'timeout') return;
  const pending = informers.flatMap((i) => i.describeProblems());
  abort.abort();
  await Promise.all(informers.map((i) => i.stopped()));
  throw new Error(`initial list of ${what} did not succeed within ${timeoutMs} ms: ${pending.join('; ')}`);
}
