import { setMaxListeners } from 'node:events';
import { ApiException, CustomObjectsApi, type KubeConfig, Watch } from '@kubernetes/client-node';
import type { Counter, Gauge, Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import {
  apiVersionOf,
  type BackoffOptions,
  backoffDelay,
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
  sleep,
} from './source.js';

export interface KubeSourceOptions {
  kubeConfig: KubeConfig;
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

type RestartReason = 'error' | 'expired' | 'stalled';

/** 410 Gone: the resourceVersion we hold is older than the server's history, so only a relist helps. */
class Expired extends Error {}
/** The watch sent nothing, not even its timeout, for longer than it promised: the connection is dead. */
class Stalled extends Error {}

interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: RawResource['metadata'] & { continue?: string };
  spec?: unknown;
}
interface KubeList {
  items?: KubeObject[];
  metadata?: { resourceVersion?: string; continue?: string };
}

/**
 * In-cluster mode: list + watch of every kind in every served namespace. client-node's
 * informer stops for good on some errors, so each stream is a loop of our own that always
 * restarts (backoff with jitter), relists on 410, and keeps its last objects while broken.
 */
export class KubeSource implements ConfigSource {
  readonly #opts: KubeSourceOptions;
  readonly #log: Logger;
  readonly #streams: ListWatch[] = [];
  readonly #abort = new AbortController();
  readonly #debouncer: Debouncer;
  readonly #healthyGauge: Gauge<'kind'>;
  readonly #restarts: Counter<'kind' | 'reason'>;
  readonly #objects: Gauge<'kind'>;
  #publisher: StatePublisher | undefined;
  #runs: Promise<void>[] = [];
  #synced = false;
  #onSynced: (() => void) | undefined;

  constructor(opts: KubeSourceOptions) {
    this.#opts = opts;
    this.#log = opts.log.child({ component: 'config-source', source: 'k8s' });
    this.#debouncer = new Debouncer(opts.debounceMs ?? DEFAULT_DEBOUNCE_MS, () => this.#publish());
    const r = opts.registry;
    this.#healthyGauge = gaugeOn(
      r,
      'nox_config_watch_healthy',
      '1 while every list+watch of the kind is established, 0 while one is being re-established.',
      ['kind'],
    );
    this.#restarts = counterOn(
      r,
      'nox_config_watch_restarts_total',
      'List+watch restarts by kind and reason: error, expired (410 Gone: relisted), stalled.',
      ['kind', 'reason'],
    );
    this.#objects = objectsGauge(r);

    const api = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    const watch = new Watch(opts.kubeConfig);
    for (const kind of opts.kinds) {
      if (!kind.group) throw new Error(`KubeSource serves custom resources only; ${kind.kind} has no group`);
      this.#healthyGauge.set({ kind: kind.kind }, 0);
      const scopes =
        kind.namespaced === false || opts.namespaces.length === 0 ? [undefined] : opts.namespaces;
      for (const namespace of scopes) {
        this.#streams.push(
          new ListWatch(kind, namespace, {
            api,
            watch,
            log: this.#log.child({ kind: kind.kind, namespace: namespace ?? '*' }),
            signal: this.#abort.signal,
            backoff: opts.backoff ?? {},
            watchTimeoutSeconds: opts.watchTimeoutSeconds ?? 300,
            requestTimeoutMs: opts.requestTimeoutMs ?? 30_000,
            onChange: () => this.#changed(),
            onHealth: () => this.#healthChanged(kind),
            onRestart: (reason) => this.#restarts.inc({ kind: kind.kind, reason }),
          }),
        );
      }
    }
    // Every stream waits on the one stop signal.
    setMaxListeners(this.#streams.length + 10, this.#abort.signal);
  }

  async start(onState: (state: SourceState) => void): Promise<void> {
    if (this.#publisher || this.#abort.signal.aborted) throw new Error('KubeSource already started');
    this.#publisher = new StatePublisher(onState, this.#log);
    const synced = new Promise<void>((resolve) => {
      this.#onSynced = resolve;
    });
    this.#runs = this.#streams.map((s) => s.run());
    const timeoutMs = this.#opts.startTimeoutMs ?? 60_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const outcome = await Promise.race([synced, timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      const pending = this.#streams
        .filter((s) => !s.synced)
        .map((s) => `${s.describe()}: ${s.lastError ?? 'pending'}`);
      await this.stop();
      throw new Error(`initial list did not succeed within ${timeoutMs} ms: ${pending.join('; ')}`);
    }
    this.#synced = true;
    this.#publish();
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    this.#debouncer.cancel();
    await Promise.allSettled(this.#runs);
  }

  healthy(): boolean {
    return !this.#abort.signal.aborted && this.#streams.every((s) => s.healthy);
  }

  #changed(): void {
    if (this.#synced) this.#debouncer.trigger();
    else if (this.#streams.every((s) => s.synced)) this.#onSynced?.();
  }

  #healthChanged(kind: ResourceKind): void {
    const ok = this.#streams.filter((s) => s.kind === kind).every((s) => s.healthy);
    this.#healthyGauge.set({ kind: kind.kind }, ok ? 1 : 0);
  }

  #publish(): void {
    if (this.#abort.signal.aborted || !this.#publisher) return;
    const resources = this.#streams.flatMap((s) => [...s.objects.values()]);
    const sortKey = (r: RawResource) => `${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`;
    resources.sort((a, b) => (sortKey(a) < sortKey(b) ? -1 : 1));
    if (!this.#publisher.publish({ resources, problems: [] })) return;
    for (const kind of this.#opts.kinds) {
      this.#objects.set({ kind: kind.kind }, resources.filter((r) => r.kind === kind.kind).length);
    }
    this.#log.info({ resources: resources.length }, 'configuration state delivered');
  }
}

interface ListWatchDeps {
  api: CustomObjectsApi;
  watch: Watch;
  log: Logger;
  signal: AbortSignal;
  backoff: BackoffOptions;
  watchTimeoutSeconds: number;
  requestTimeoutMs: number;
  onChange(): void;
  onHealth(): void;
  onRestart(reason: RestartReason): void;
}

/** One list+watch of one kind in one namespace (or all of them). */
class ListWatch {
  readonly objects = new Map<string, RawResource>();
  synced = false;
  healthy = false;
  lastError: string | undefined;
  #resourceVersion = '';
  #failures = 0;
  #lastExpiredAt = 0;

  constructor(
    readonly kind: ResourceKind,
    readonly namespace: string | undefined,
    private readonly deps: ListWatchDeps,
  ) {}

  describe(): string {
    return `${this.kind.plural}.${this.kind.group} in ${this.namespace ?? 'all namespaces'}`;
  }

  async run(): Promise<void> {
    const { signal, log, backoff } = this.deps;
    while (!signal.aborted) {
      try {
        if (!this.#resourceVersion) await this.#list();
        const openedAt = Date.now();
        await this.#watch();
        // A server that closes watches at once must not make us hammer it.
        if (Date.now() - openedAt < 1000) await sleep(backoffDelay(this.#failures++, backoff), signal);
      } catch (e) {
        if (signal.aborted) break;
        const reason: RestartReason =
          e instanceof Expired ? 'expired' : e instanceof Stalled ? 'stalled' : 'error';
        this.deps.onRestart(reason);
        this.lastError = describeError(e);
        if (reason === 'expired') {
          log.info({ err: this.lastError }, 'resourceVersion expired; relisting');
          this.#resourceVersion = '';
          // Relist at once, unless the previous relist expired too (then it is a loop; back off).
          const recent = Date.now() - this.#lastExpiredAt < 5000;
          this.#lastExpiredAt = Date.now();
          if (!recent) continue;
        } else {
          this.#setHealthy(false);
        }
        const delayMs = backoffDelay(this.#failures++, backoff);
        log.warn(
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
    this.deps.onHealth();
  }

  async #list(): Promise<void> {
    const items: KubeObject[] = [];
    let page: KubeList;
    let next: string | undefined;
    do {
      page = await this.#listPage(next);
      items.push(...(page.items ?? []));
      next = page.metadata?.continue || undefined;
    } while (next);
    this.objects.clear();
    for (const item of items) this.#store(item);
    this.#resourceVersion = page.metadata?.resourceVersion ?? '';
    this.deps.log.info({ objects: items.length, resourceVersion: this.#resourceVersion }, 'listed');
    this.synced = true;
    this.#failures = 0;
    this.#setHealthy(true);
    this.deps.onChange();
  }

  async #listPage(next: string | undefined): Promise<KubeList> {
    const { group, version, plural } = this.kind;
    const base = { group, version, plural, limit: 500, ...(next ? { _continue: next } : {}) };
    const call: Promise<KubeList> =
      this.kind.namespaced === false
        ? this.deps.api.listClusterCustomObject(base)
        : this.namespace
          ? this.deps.api.listNamespacedCustomObject({ ...base, namespace: this.namespace })
          : this.deps.api.listCustomObjectForAllNamespaces(base);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('list timed out')), this.deps.requestTimeoutMs);
    });
    try {
      return await Promise.race([call, timeout]);
    } catch (e) {
      if (e instanceof ApiException && e.code === 410) throw new Expired(describeError(e));
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves when the server ends the watch normally; rejects with Expired, Stalled or the error. */
  #watch(): Promise<void> {
    const { group, version, plural } = this.kind;
    const path = `/apis/${group}/${version}/${this.namespace ? `namespaces/${this.namespace}/` : ''}${plural}`;
    const timeoutSeconds = Math.round(this.deps.watchTimeoutSeconds * (1 + Math.random() / 2));
    const query = { resourceVersion: this.#resourceVersion, allowWatchBookmarks: true, timeoutSeconds };
    const { signal } = this.deps;
    return new Promise<void>((resolve, reject) => {
      let request: AbortController | undefined;
      let settled = false;
      const finish = (err?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(stallTimer);
        signal.removeEventListener('abort', cancel);
        request?.abort();
        if (err) reject(err);
        else resolve();
      };
      const cancel = () => finish(new Error('stopped'));
      const stallTimer = setTimeout(
        () => finish(new Stalled(`no end of watch after ${timeoutSeconds + 30} s`)),
        (timeoutSeconds + 30) * 1000,
      );
      signal.addEventListener('abort', cancel, { once: true });
      const onEvent = (type: string, obj: KubeObject & { code?: number; message?: string }) => {
        if (type === 'ERROR') {
          const why = `watch error event ${obj.code}: ${obj.message}`;
          finish(obj.code === 410 ? new Expired(why) : new Error(why));
          return;
        }
        if (type === 'DELETED') this.objects.delete(keyOf(obj));
        else if (type === 'ADDED' || type === 'MODIFIED') this.#store(obj);
        if (obj.metadata?.resourceVersion) this.#resourceVersion = obj.metadata.resourceVersion;
        if (type !== 'BOOKMARK') this.deps.onChange();
      };
      const onDone = (err: unknown) => {
        const status = (err as { statusCode?: number } | null)?.statusCode;
        finish(status === 410 ? new Expired(`watch HTTP 410`) : (err ?? undefined));
      };
      this.deps.watch.watch(path, query, onEvent, onDone).then(
        (controller) => {
          request = controller;
          if (settled) controller.abort();
          else {
            // The server answered 200: the watch is established.
            this.#failures = 0;
            this.#setHealthy(true);
          }
        },
        (e: unknown) => finish(e),
      );
    });
  }

  #store(obj: KubeObject): void {
    const m = obj.metadata;
    if (!m?.name) return;
    const raw: RawResource = {
      apiVersion: obj.apiVersion ?? apiVersionOf(this.kind),
      kind: obj.kind ?? this.kind.kind,
      metadata: {
        name: m.name,
        ...(m.namespace ? { namespace: m.namespace } : {}),
        ...(m.generation !== undefined ? { generation: m.generation } : {}),
        ...(m.resourceVersion ? { resourceVersion: m.resourceVersion } : {}),
        ...(m.uid ? { uid: m.uid } : {}),
        ...(m.labels ? { labels: m.labels } : {}),
      },
      ...(obj.spec !== undefined ? { spec: obj.spec } : {}),
      origin: 'k8s',
    };
    this.objects.set(keyOf(obj), deepFreeze(raw));
  }
}

function keyOf(obj: KubeObject): string {
  return `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;
}

/** One line for logs: ApiException's own message carries the whole response, headers included. */
function describeError(e: unknown): string {
  if (e instanceof ApiException) {
    let message = '';
    try {
      message = (JSON.parse(String(e.body)) as { message?: string }).message ?? '';
    } catch {
      /* not a Status body */
    }
    return `HTTP ${e.code}${message ? `: ${message}` : ''}`;
  }
  return e instanceof Error ? e.message : String(e);
}
