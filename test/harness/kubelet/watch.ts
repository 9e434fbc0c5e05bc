import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { Watch } from '@kubernetes/client-node';
import { kubeRequest } from '../kubeHttp.js';

export type WatchEvent = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface ListWatchHandlers<T> {
  /** The full list, after every (re)list: whatever is not in it is gone. */
  onList(items: T[]): void;
  onEvent(type: WatchEvent, obj: T): void;
}

/**
 * List, then watch from the list's resourceVersion; when the watch ends or fails (timeout,
 * 410 Gone, API server restart), list again after 500 ms. Runs until `signal` aborts.
 */
export async function listWatch<T>(
  kc: KubeConfig,
  path: string,
  query: Record<string, string>,
  handlers: ListWatchHandlers<T>,
  signal: AbortSignal,
  label: string,
): Promise<void> {
  const watch = new Watch(kc);
  while (!signal.aborted) {
    try {
      const qs = new URLSearchParams(query).toString();
      const list = await kubeRequest(kc, 'GET', qs ? `${path}?${qs}` : path);
      if (list.status !== 200) throw new Error(`list ${path}: ${list.status}`);
      const body = list.body as { items: T[]; metadata: { resourceVersion: string } };
      if (signal.aborted) return;
      handlers.onList(body.items);
      await new Promise<void>((resolve) => {
        let ctl: AbortController | undefined;
        const done = () => {
          signal.removeEventListener('abort', abort);
          resolve();
        };
        const abort = () => {
          ctl?.abort();
          done();
        };
        signal.addEventListener('abort', abort, { once: true });
        watch
          .watch(
            path,
            {
              ...query,
              resourceVersion: body.metadata.resourceVersion,
              allowWatchBookmarks: true,
              timeoutSeconds: 300,
            },
            (type: string, obj: T) => {
              if (signal.aborted) return;
              if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') handlers.onEvent(type, obj);
            },
            () => done(),
          )
          .then(
            (c) => {
              ctl = c;
              if (signal.aborted) c.abort();
            },
            () => done(),
          );
      });
    } catch (e) {
      if (!signal.aborted) console.error(`${label}: watch ${path}:`, e);
    }
    if (!signal.aborted) await new Promise((r) => setTimeout(r, 500));
  }
}

/** A live cache of one resource, keyed `namespace/name`, kept by listWatch. */
export interface Informer<T> {
  readonly items: Map<string, T>;
  /** Resolves after the first list. */
  readonly synced: Promise<void>;
}

export const keyOf = (o: KubernetesObject) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

export function informer<T extends KubernetesObject>(
  kc: KubeConfig,
  path: string,
  query: Record<string, string>,
  signal: AbortSignal,
  onChange: () => void,
  label: string,
): Informer<T> {
  const items = new Map<string, T>();
  let markSynced!: () => void;
  const synced = new Promise<void>((r) => {
    markSynced = r;
  });
  void listWatch<T>(
    kc,
    path,
    query,
    {
      onList(list) {
        items.clear();
        for (const o of list) items.set(keyOf(o), o);
        markSynced();
        onChange();
      },
      onEvent(type, o) {
        if (type === 'DELETED') items.delete(keyOf(o));
        else items.set(keyOf(o), o);
        onChange();
      },
    },
    signal,
    label,
  );
  return { items, synced };
}
