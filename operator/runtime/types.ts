import type { KubernetesObject } from '@kubernetes/client-node';

/**
 * The operator's reconcile contract (controller-runtime's): a request carries only the
 * object's key; the reconciler re-reads the world, computes what should exist, applies it,
 * observes, and writes status. It never branches on "added" or "deleted".
 */
export interface ObjectKey {
  readonly namespace: string;
  readonly name: string;
}

export type ReconcileResult =
  | { readonly kind: 'done' }
  /** Come back after this long even if nothing changes (e.g. waiting for pods). */
  | { readonly kind: 'requeue'; readonly afterMs: number }
  /** Retried with rate-limited exponential backoff; counted in metrics. */
  | { readonly kind: 'error'; readonly error: unknown }
  /** The spec can never work as written: reported in status, not retried until it changes. */
  | { readonly kind: 'terminal'; readonly reason: string; readonly message: string };

export interface Reconciler {
  /** The nox.dev kind this reconciler owns, e.g. "RedisCluster". */
  readonly kind: string;
  reconcile(key: ObjectKey): Promise<ReconcileResult>;
}

/** Server-side apply under one field manager ("nox-operator"), and status writes. */
export interface Applier {
  apply<T extends KubernetesObject>(obj: T): Promise<T>;
  applyStatus<T extends KubernetesObject>(obj: T): Promise<void>;
  delete(apiVersion: string, kind: string, key: ObjectKey): Promise<void>;
}

export const fieldManager = 'nox-operator';
