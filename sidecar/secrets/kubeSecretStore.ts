import type { Registry } from 'prom-client';
import type { BackoffOptions } from '../../common/backoff.js';
import {
  decodeBase64Values,
  identityMeta,
  type KubeClient,
  type KubeObject,
} from '../../common/kube/client.js';
import { Informer, startAndSync, watchMetrics } from '../../common/kube/informer.js';
import { secrets } from '../../common/kube/resources.js';
import type { Logger } from '../../common/logger.js';
import { counterOn, gaugeOn } from '../config/source.js';
import { type SecretContent, type SecretStore, selectByLabels } from './secretStore.js';

export interface KubeSecretStoreOptions {
  client: KubeClient;
  /** Namespaces to read; empty: all namespaces. */
  namespaces: readonly string[];
  log: Logger;
  registry: Registry;
  /** start() rejects if the first list of every namespace has not succeeded by then. Default 60 s. */
  startTimeoutMs?: number;
  backoff?: BackoffOptions;
  /** Server-side timeout of one watch request, plus up to 50% jitter. Default 300 s. */
  watchTimeoutSeconds?: number;
  /** A list page that has not arrived by then is abandoned and retried. Default 30 s. */
  requestTimeoutMs?: number;
}

/** What the store keeps of a Secret: its labels and decoded data, nothing else. */
interface StoredSecret extends KubeObject, SecretContent {}

// Helm keeps every release revision in a Secret (often hundreds of kB each); none is ever a Nox credential.
const FIELD_SELECTOR = 'type!=helm.sh/release.v1';

/**
 * Secrets of the served namespaces, kept in memory by the shared informer (common/kube): a
 * deleted Secret stops working within seconds, and while a watch is broken the last
 * Secrets stay readable. RBAC: get, list, watch on secrets in those namespaces.
 */
export class KubeSecretStore implements SecretStore {
  readonly #opts: KubeSecretStoreOptions;
  readonly #informer: Informer<StoredSecret>;
  readonly #abort = new AbortController();
  readonly #listeners: (() => void)[] = [];
  #started = false;

  constructor(opts: KubeSecretStoreOptions) {
    this.#opts = opts;
    const log = opts.log.child({ component: 'secret-store', source: 'k8s' });
    const healthy = gaugeOn(
      opts.registry,
      'nox_secrets_watch_healthy',
      '1 while every list+watch of Secrets is established, 0 while one is being re-established.',
      [],
    );
    const restarts = counterOn(
      opts.registry,
      'nox_secrets_watch_restarts_total',
      'Secret list+watch restarts by reason: error, expired (410 Gone: relisted), stalled.',
      ['reason'],
    );
    this.#informer = new Informer<StoredSecret>({
      client: opts.client,
      resource: secrets,
      namespaces: opts.namespaces,
      fieldSelector: FIELD_SELECTOR,
      transform: toStoredSecret,
      log,
      metrics: watchMetrics({ healthy, restarts }, {}),
      ...(opts.backoff ? { backoff: opts.backoff } : {}),
      ...(opts.watchTimeoutSeconds ? { watchTimeoutSeconds: opts.watchTimeoutSeconds } : {}),
      ...(opts.requestTimeoutMs ? { requestTimeoutMs: opts.requestTimeoutMs } : {}),
    });
    this.#informer.addHandler(() => this.#changed());
  }

  get(namespace: string, name: string, key: string): Buffer | undefined {
    return this.#informer.get({ namespace, name })?.data[key];
  }

  select(
    namespace: string,
    labels: Readonly<Record<string, string>>,
  ): ReadonlyMap<string, Readonly<Record<string, Buffer>>> {
    return selectByLabels(
      this.#informer.list(namespace).map((s) => [s.metadata.name, s] as const),
      labels,
    );
  }

  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  async start(): Promise<void> {
    if (this.#started || this.#abort.signal.aborted) throw new Error('KubeSecretStore already started');
    this.#started = true;
    await startAndSync([this.#informer], this.#abort, this.#opts.startTimeoutMs ?? 60_000, 'Secrets');
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#informer.stopped();
  }

  healthy(): boolean {
    return !this.#abort.signal.aborted && this.#informer.healthy;
  }

  #changed(): void {
    for (const l of this.#listeners) {
      try {
        l();
      } catch (e) {
        this.#opts.log.error({ err: (e as Error).message }, 'secret change listener threw');
      }
    }
  }
}

function toStoredSecret(obj: KubeObject & { data?: Record<string, string> }): StoredSecret {
  return {
    metadata: identityMeta(obj.metadata),
    labels: { ...(obj.metadata.labels ?? {}) },
    data: decodeBase64Values(obj.data),
  };
}
