import { setMaxListeners } from 'node:events';
import { CoreV1Api, type KubeConfig, Watch } from '@kubernetes/client-node';
import type { Counter, Gauge, Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { type BackoffOptions, counterOn, gaugeOn, sleep } from '../config/source.js';
import type { SecretStore } from './secretStore.js';
import { SecretStream } from './secretStream.js';

export interface KubeSecretStoreOptions {
  kubeConfig: KubeConfig;
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

/**
 * Secrets of the served namespaces, kept in memory by one list+watch per namespace. Like
 * KubeSource, each stream is a loop of our own that always restarts with backoff and relists
 * on 410; while a stream is broken its last Secrets stay readable. RBAC: get, list, watch
 * on secrets in those namespaces.
 */
export class KubeSecretStore implements SecretStore {
  readonly #opts: KubeSecretStoreOptions;
  readonly #streams: SecretStream[] = [];
  readonly #abort = new AbortController();
  readonly #listeners: (() => void)[] = [];
  readonly #healthy: Gauge;
  readonly #restarts: Counter<'reason'>;
  #runs: Promise<void>[] = [];

  constructor(opts: KubeSecretStoreOptions) {
    this.#opts = opts;
    const log = opts.log.child({ component: 'secret-store', source: 'k8s' });
    this.#healthy = gaugeOn(
      opts.registry,
      'nox_secrets_watch_healthy',
      '1 while every list+watch of Secrets is established, 0 while one is being re-established.',
      [],
    );
    this.#restarts = counterOn(
      opts.registry,
      'nox_secrets_watch_restarts_total',
      'Secret list+watch restarts by reason: error, expired (410 Gone: relisted), stalled.',
      ['reason'],
    );
    this.#healthy.set(0);
    const api = opts.kubeConfig.makeApiClient(CoreV1Api);
    const watch = new Watch(opts.kubeConfig);
    const scopes = opts.namespaces.length === 0 ? [undefined] : opts.namespaces;
    for (const namespace of scopes) {
      this.#streams.push(
        new SecretStream(namespace, {
          api,
          watch,
          log: log.child({ namespace: namespace ?? '*' }),
          signal: this.#abort.signal,
          backoff: opts.backoff ?? {},
          watchTimeoutSeconds: opts.watchTimeoutSeconds ?? 300,
          requestTimeoutMs: opts.requestTimeoutMs ?? 30_000,
          onChange: () => this.#changed(),
          onHealth: () => this.#healthy.set(this.healthy() ? 1 : 0),
          onRestart: (reason) => this.#restarts.inc({ reason }),
        }),
      );
    }
    setMaxListeners(this.#streams.length + 10, this.#abort.signal);
  }

  get(namespace: string, name: string, key: string): Buffer | undefined {
    return this.#stream(namespace)?.objects.get(`${namespace}/${name}`)?.data[key];
  }

  select(
    namespace: string,
    labels: Readonly<Record<string, string>>,
  ): ReadonlyMap<string, Readonly<Record<string, Buffer>>> {
    const out = new Map<string, Readonly<Record<string, Buffer>>>();
    const stream = this.#stream(namespace);
    if (!stream) return out;
    const wanted = Object.entries(labels);
    const prefix = `${namespace}/`;
    for (const [key, s] of stream.objects) {
      if (!key.startsWith(prefix)) continue;
      if (wanted.every(([k, v]) => s.labels[k] === v)) out.set(key.slice(prefix.length), s.data);
    }
    return out;
  }

  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  async start(): Promise<void> {
    if (this.#runs.length > 0 || this.#abort.signal.aborted)
      throw new Error('KubeSecretStore already started');
    const timeoutMs = this.#opts.startTimeoutMs ?? 60_000;
    this.#runs = this.#streams.map((s) => s.run());
    const deadline = Date.now() + timeoutMs;
    while (!this.#streams.every((s) => s.synced)) {
      if (Date.now() > deadline) {
        const pending = this.#streams.filter((s) => !s.synced).map((s) => `${s.describe()}: ${s.lastError}`);
        await this.stop();
        throw new Error(
          `initial list of Secrets did not succeed within ${timeoutMs} ms: ${pending.join('; ')}`,
        );
      }
      await sleep(20, this.#abort.signal);
    }
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await Promise.allSettled(this.#runs);
  }

  healthy(): boolean {
    return !this.#abort.signal.aborted && this.#streams.every((s) => s.healthy);
  }

  #stream(namespace: string): SecretStream | undefined {
    return this.#streams.find((s) => s.namespace === undefined || s.namespace === namespace);
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
