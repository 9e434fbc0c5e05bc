import {
  describeError,
  groupOf,
  type KubeObject,
  type OwnerReference,
  type ResourceType,
} from '../../common/kube/client.js';
import { Informer, type InformerEvent } from '../../common/kube/informer.js';
import type { Logger } from '../../common/logger.js';
import type { Cache } from './cache.js';
import type { OperatorMetrics } from './metrics.js';
import { type RateLimiterOptions, WorkQueue } from './queue.js';
import type { ObjectKey, ReconcileResult, Reconciler } from './types.js';

/** A resource whose changes wake up some of this controller's objects; make one with watchOf(). */
export interface Watch {
  readonly informer: Informer;
  readonly map: (obj: KubeObject) => ObjectKey[];
}

/**
 * `informer`'s changes wake up the keys `map` names (called with the old and the new state
 * on updates, the last state on deletes). The informer comes from the shared cache, so its
 * view (transform) is the caller's choice.
 */
export function watchOf<T extends KubeObject>(informer: Informer<T>, map: (obj: T) => ObjectKey[]): Watch {
  return { informer: informer as unknown as Informer, map: map as (obj: KubeObject) => ObjectKey[] };
}

export interface ControllerOptions {
  /** The kind reconciled; its objects' keys are the queue's keys. */
  for: ResourceType;
  reconciler: Reconciler;
  /**
   * Child types: a change of a child wakes up the owner named by its controller owner
   * reference (apiVersion group and kind of `for`). A type is watched whole in the served
   * namespaces; pass an informer from the cache instead to narrow it (label selector) or
   * to keep less of each object (transform).
   */
  owns?: readonly (ResourceType | Informer)[];
  /** Other resources the reconciler reads (Secrets, ConfigMaps, other kinds), mapped to keys. */
  watches?: readonly Watch[];
  /** Keys reconciled at once (never the same key twice at a time). Default 2. */
  concurrency?: number;
  /** Every object is reconciled at least this often even if nothing changes. Default 10 min. */
  resyncMs?: number;
  /** Retry backoff of failing keys. */
  rateLimit?: RateLimiterOptions;
  /**
   * Whether an update of a primary object is worth a reconcile. Default: only when
   * something other than status changed (generation, labels, annotations, finalizers,
   * owner references, deletion) — status writes of our own do not loop back.
   */
  primaryChanged?: (old: KubeObject, next: KubeObject) => boolean;
}

export interface ControllerContext {
  cache: Cache;
  log: Logger;
  metrics: OperatorMetrics;
}

export const keyString = (k: { namespace?: string | undefined; name: string }): string =>
  `${k.namespace ?? ''}/${k.name}`;

export function parseKey(s: string): ObjectKey {
  const i = s.indexOf('/');
  return { namespace: s.slice(0, i), name: s.slice(i + 1) };
}

/** An owner reference that makes `owner` the controller of a child (garbage-collected with it). */
export function controllerRef(owner: KubeObject & { apiVersion: string; kind: string }): OwnerReference {
  if (!owner.metadata.uid) throw new Error(`${owner.kind} ${owner.metadata.name} has no uid yet`);
  return {
    apiVersion: owner.apiVersion,
    kind: owner.kind,
    name: owner.metadata.name,
    uid: owner.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function specChanged(old: KubeObject, next: KubeObject): boolean {
  const a = old.metadata;
  const b = next.metadata;
  if (a.uid !== b.uid) return true;
  if (a.generation === undefined || a.generation !== b.generation) return true;
  const same = (x: unknown, y: unknown) => JSON.stringify(x ?? null) === JSON.stringify(y ?? null);
  return (
    !same(a.labels, b.labels) ||
    !same(a.annotations, b.annotations) ||
    !same(a.finalizers, b.finalizers) ||
    !same(a.ownerReferences, b.ownerReferences) ||
    a.deletionTimestamp !== b.deletionTimestamp
  );
}

/**
 * Runs one Reconciler: its objects' events (and those of owned and watched resources)
 * become keys in a WorkQueue; workers take keys and call reconcile(key), which re-reads
 * the world and never learns which event woke it. Started when this replica becomes the
 * leader, stopped when it stops being one.
 *
 *     manager.add(new Controller({ for: noxType('RedisCluster'), reconciler,
 *       owns: [statefulSets, services, configMaps, secrets, podDisruptionBudgets] }));
 */
export class Controller {
  readonly kind: string;
  readonly #opts: ControllerOptions;
  #ctx: ControllerContext | undefined;
  #primary: Informer | undefined;
  #owned: Informer[] = [];
  #queue: WorkQueue | undefined;
  #unsubscribe: (() => void)[] = [];
  #workers: Promise<void>[] = [];
  #resync: NodeJS.Timeout | undefined;
  #log: Logger | undefined;

  constructor(opts: ControllerOptions) {
    if (opts.reconciler.kind !== opts.for.kind)
      throw new Error(`reconciler of ${opts.reconciler.kind} cannot run for ${opts.for.kind}`);
    this.#opts = opts;
    this.kind = opts.for.kind;
  }

  /** Called by the Manager when the controller is added: creates the informers it needs. */
  setup(ctx: ControllerContext): void {
    this.#ctx = ctx;
    this.#log = ctx.log.child({ controller: this.kind });
    this.#primary = ctx.cache.informer(this.#opts.for);
    this.#owned = (this.#opts.owns ?? []).map((t) => (t instanceof Informer ? t : ctx.cache.informer(t)));
    ctx.metrics.queueDepth.set({ kind: this.kind }, 0);
  }

  get running(): boolean {
    return this.#queue !== undefined && !this.#queue.shuttingDown;
  }

  /** The current queue (for tests and diagnostics). */
  get queue(): WorkQueue | undefined {
    return this.#queue;
  }

  /** Starts the workers and enqueues every object the cache holds (caches must be synced). */
  start(): void {
    const ctx = this.#ctx;
    const primary = this.#primary;
    if (!ctx || !primary) throw new Error(`controller ${this.kind} was not added to a manager`);
    if (this.running) return;
    const queue = new WorkQueue({
      ...this.#opts.rateLimit,
      onDepth: (n) => ctx.metrics.queueDepth.set({ kind: this.kind }, n),
    });
    this.#queue = queue;
    const enqueue = (k: ObjectKey) => queue.add(keyString(k));
    const changed = this.#opts.primaryChanged ?? specChanged;

    this.#unsubscribe.push(
      primary.addHandler((e) => {
        if (e.type === 'updated' && !changed(e.old, e.object)) return;
        enqueue({ namespace: e.object.metadata.namespace ?? '', name: e.object.metadata.name });
      }),
    );
    const ownerGroup = this.#opts.for.group;
    for (const inf of this.#owned) {
      this.#unsubscribe.push(
        inf.addHandler((e) => {
          for (const obj of objectsOf(e)) {
            for (const ref of obj.metadata.ownerReferences ?? []) {
              if (ref.controller && ref.kind === this.kind && groupOf(ref.apiVersion) === ownerGroup)
                enqueue({ namespace: obj.metadata.namespace ?? '', name: ref.name });
            }
          }
        }),
      );
    }
    for (const w of this.#opts.watches ?? []) {
      this.#unsubscribe.push(
        w.informer.addHandler((e) => {
          for (const obj of objectsOf(e)) for (const k of w.map(obj)) enqueue(k);
        }),
      );
    }
    this.#enqueueAll();
    const resyncMs = this.#opts.resyncMs ?? 600_000;
    this.#resync = setInterval(() => this.#enqueueAll(), resyncMs);
    this.#resync.unref?.();
    const n = this.#opts.concurrency ?? 2;
    this.#workers = Array.from({ length: n }, () => this.#work(queue));
    this.#log?.info({ workers: n, objects: primary.size }, 'controller started');
  }

  /** Stops taking keys and waits (at most `timeoutMs`) for reconciles in flight. */
  async stop(timeoutMs = 10_000): Promise<void> {
    const queue = this.#queue;
    if (!queue) return;
    clearInterval(this.#resync);
    for (const u of this.#unsubscribe) u();
    this.#unsubscribe = [];
    queue.shutDown();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((r) => {
      timer = setTimeout(() => r('timeout'), timeoutMs);
    });
    const outcome = await Promise.race([Promise.all(this.#workers).then(() => 'ok' as const), timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout')
      this.#log?.warn({ inFlight: queue.processing }, 'reconciles still running at stop');
    this.#ctx?.metrics.queueDepth.set({ kind: this.kind }, 0);
    this.#log?.info('controller stopped');
  }

  /** Wakes one object up now (e.g. from an admin endpoint). */
  enqueue(key: ObjectKey): void {
    this.#queue?.add(keyString(key));
  }

  #enqueueAll(): void {
    for (const obj of this.#primary?.list() ?? [])
      this.#queue?.add(keyString({ namespace: obj.metadata.namespace ?? '', name: obj.metadata.name }));
  }

  async #work(queue: WorkQueue): Promise<void> {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      try {
        await this.#reconcileOne(queue, key);
      } finally {
        queue.done(key);
      }
    }
  }

  async #reconcileOne(queue: WorkQueue, key: string): Promise<void> {
    const ctx = this.#ctx as ControllerContext;
    const log = this.#log as Logger;
    const objectKey = parseKey(key);
    const stopTimer = ctx.metrics.reconcileSeconds.startTimer({ kind: this.kind });
    let result: ReconcileResult;
    try {
      result = await this.#opts.reconciler.reconcile(objectKey);
    } catch (error) {
      result = { kind: 'error', error };
    }
    stopTimer();
    switch (result.kind) {
      case 'done':
        ctx.metrics.reconciles.inc({ kind: this.kind, result: 'success' });
        queue.forget(key);
        break;
      case 'requeue':
        ctx.metrics.reconciles.inc({ kind: this.kind, result: 'requeue' });
        queue.forget(key);
        queue.addAfter(key, result.afterMs);
        break;
      case 'error': {
        ctx.metrics.reconciles.inc({ kind: this.kind, result: 'error' });
        const delayMs = queue.addRateLimited(key);
        log.warn(
          { key, err: describeError(result.error), attempt: queue.failures(key), retryInMs: delayMs },
          'reconcile failed; retrying',
        );
        break;
      }
      case 'terminal':
        ctx.metrics.reconciles.inc({ kind: this.kind, result: 'terminal' });
        queue.forget(key);
        log.info(
          { key, reason: result.reason, message: result.message },
          'reconcile: terminal; waiting for a change',
        );
        break;
    }
  }
}

function objectsOf<T>(e: InformerEvent<T>): T[] {
  return e.type === 'updated' ? [e.old, e.object] : [e.object];
}
