import type { KubeConfig } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import type { BackoffOptions } from '../../common/backoff.js';
import { type HttpServer, type Probe, startHttpServer } from '../../common/httpServer.js';
import { KubeClient } from '../../common/kube/client.js';
import type { Logger } from '../../common/logger.js';
import { KubeApplier, RestMapper } from './applier.js';
import { Cache } from './cache.js';
import type { Controller } from './controller.js';
import { type LeaderElectionTiming, LeaderElector } from './leaderElection.js';
import { type OperatorMetrics, operatorMetrics } from './metrics.js';
import { fieldManager } from './types.js';

export interface LeaderElectionConfig extends Partial<LeaderElectionTiming> {
  /** Namespace of the Lease (the operator's own). */
  namespace: string;
  /** Lease name. */
  name: string;
  identity: string;
}

export interface ManagerOptions {
  kubeConfig: KubeConfig;
  log: Logger;
  registry: Registry;
  /** Namespaces served; empty or absent: all. */
  namespaces?: readonly string[];
  /** false: this replica always leads (a single replica). */
  leaderElection: LeaderElectionConfig | false;
  /** /healthz, /readyz, /metrics; absent: no HTTP server (in-process tests). */
  http?: { host: string; port: number };
  requestTimeoutMs?: number;
  watchTimeoutSeconds?: number;
  watchBackoff?: BackoffOptions;
  /** How long stopping waits for reconciles in flight. Default 10 s. */
  shutdownTimeoutMs?: number;
}

/**
 * One operator process: the shared cache (on every replica), the controllers (only on the
 * leader, once the caches have synced), leader election, the health/metrics server, and
 * an orderly stop: controllers drain, the Lease is released, watches close.
 */
export class Manager {
  readonly client: KubeClient;
  readonly cache: Cache;
  /** Where controllers register metrics of their own. */
  readonly registry: Registry;
  readonly applier: KubeApplier;
  readonly mapper: RestMapper;
  readonly metrics: OperatorMetrics;
  readonly log: Logger;
  readonly #opts: ManagerOptions;
  readonly #controllers: Controller[] = [];
  readonly #abort = new AbortController();
  #elector: LeaderElector | undefined;
  #election: Promise<void> | undefined;
  #http: HttpServer | undefined;
  #leading = false;
  /** Bumped on every start/stop of leading, so a late cache sync cannot start a stale term. */
  #term = 0;
  #started = false;
  #stopping: Promise<void> | undefined;

  constructor(opts: ManagerOptions) {
    this.#opts = opts;
    this.log = opts.log;
    this.client = new KubeClient(opts.kubeConfig, {
      fieldManager,
      ...(opts.requestTimeoutMs ? { requestTimeoutMs: opts.requestTimeoutMs } : {}),
    });
    this.registry = opts.registry;
    this.metrics = operatorMetrics(opts.registry);
    this.cache = new Cache({
      client: this.client,
      namespaces: opts.namespaces ?? [],
      log: opts.log,
      registry: opts.registry,
      ...(opts.watchBackoff ? { backoff: opts.watchBackoff } : {}),
      ...(opts.watchTimeoutSeconds ? { watchTimeoutSeconds: opts.watchTimeoutSeconds } : {}),
      ...(opts.requestTimeoutMs ? { requestTimeoutMs: opts.requestTimeoutMs } : {}),
    });
    this.mapper = new RestMapper(this.client);
    this.applier = new KubeApplier(this.client, this.mapper);
  }

  /** Adds a controller (before or after start). */
  add(controller: Controller): void {
    controller.setup({ cache: this.cache, log: this.log, metrics: this.metrics });
    this.#controllers.push(controller);
    if (this.#leading && this.cache.synced) controller.start();
  }

  get controllers(): readonly Controller[] {
    return this.#controllers;
  }

  get isLeader(): boolean {
    return this.#leading;
  }

  /** Whether the controllers are running (leader and caches synced). */
  get reconciling(): boolean {
    return this.#controllers.length > 0 && this.#controllers.every((c) => c.running);
  }

  get identity(): string | undefined {
    return this.#elector?.identity;
  }

  /** Starts serving; returns once the HTTP server listens (caches sync and election run in the background). */
  async start(): Promise<{ httpPort: number | undefined }> {
    if (this.#started) throw new Error('manager already started');
    this.#started = true;
    const signal = this.#abort.signal;
    if (this.#opts.http) {
      this.#http = await startHttpServer(
        this.#opts.registry,
        { live: () => this.live(), ready: () => this.ready() },
        this.#opts.http.host,
        this.#opts.http.port,
        this.log,
      );
    }
    this.cache.start(signal);
    const le = this.#opts.leaderElection;
    if (le) {
      this.#elector = new LeaderElector({
        ...le,
        client: this.client,
        log: this.log,
        metrics: this.metrics,
        onStartedLeading: () => this.#lead(),
        onStoppedLeading: () => this.#unlead(),
      });
      this.#election = this.#elector.run(signal);
    } else {
      this.#lead();
      this.metrics.leader.set(1);
      this.#election = new Promise<void>((resolve) =>
        signal.addEventListener('abort', () => resolve(), { once: true }),
      ).then(async () => {
        this.metrics.leader.set(0);
        await this.#unlead();
      });
    }
    return { httpPort: this.#http?.port };
  }

  live(): Probe {
    return { ok: true, reason: 'running' };
  }

  ready(): Probe {
    if (this.#stopping) return { ok: false, reason: 'shutting down' };
    if (!this.cache.synced)
      return { ok: false, reason: `caches not synced: ${this.cache.problems().join('; ')}` };
    if (this.#opts.leaderElection === false) return { ok: true, reason: 'leading (no leader election)' };
    if (this.#leading) return { ok: true, reason: 'leader' };
    return { ok: true, reason: `standing by (leader: ${this.#elector?.observedLeader || 'unknown'})` };
  }

  /** Stops the controllers (waiting for reconciles in flight), releases the Lease, closes the watches and the server. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.log.info('operator stopping');
      this.#abort.abort();
      await this.#election;
      await this.cache.stopped();
      this.client.close();
      await this.#http?.close();
      this.log.info('operator stopped');
    })();
    return this.#stopping;
  }

  #lead(): void {
    this.#leading = true;
    const term = ++this.#term;
    // Not awaited: the elector must keep renewing while the caches sync.
    void this.cache.whenSynced().then(() => {
      if (!this.#leading || term !== this.#term || this.#abort.signal.aborted) return;
      for (const c of this.#controllers) c.start();
      this.log.info(
        { controllers: this.#controllers.map((c) => c.kind) },
        'caches synced; reconcilers running',
      );
    });
  }

  async #unlead(): Promise<void> {
    this.#leading = false;
    this.#term++;
    const timeoutMs = this.#opts.shutdownTimeoutMs ?? 10_000;
    await Promise.all(this.#controllers.map((c) => c.stop(timeoutMs)));
  }
}
