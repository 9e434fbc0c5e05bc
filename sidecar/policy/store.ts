import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import type { SourceState } from '../config/source.js';
import { type CompileOptions, compileSnapshot } from './compile.js';
import type { Snapshot } from './snapshot.js';

/**
 * Holds the snapshot in force and swaps it when a source delivers a new state. Rejections
 * and unusable references are logged and counted; the resources they concern keep their
 * last good version. The sidecar is ready once the first snapshot exists.
 */
export class PolicyStore {
  #current: Snapshot | undefined;
  #version = 0;
  readonly #compiles: Counter<'result'>;
  readonly #rejections: Counter<'kind' | 'reason'>;
  readonly #resources: Gauge<'kind' | 'state'>;
  readonly #versionGauge: Gauge;
  readonly #listeners: ((s: Snapshot) => void)[] = [];
  /** A source will deliver a first snapshot (expectSource): checks before it wait for it. */
  #expecting = false;
  #firstWaiters: (() => void)[] = [];

  constructor(
    private readonly log: Logger,
    registry: Registry,
    private readonly options: CompileOptions = {},
  ) {
    this.#compiles = new Counter({
      name: 'nox_policy_compiles_total',
      help: 'Snapshot compilations: ok (nothing rejected) or partial (some resources rejected; their last good version stays).',
      labelNames: ['result'],
      registers: [registry],
    });
    this.#rejections = new Counter({
      name: 'nox_policy_rejections_total',
      help: 'Resources rejected (invalid) or accepted with an unusable reference (unusable), per compilation.',
      labelNames: ['kind', 'reason'],
      registers: [registry],
    });
    this.#resources = new Gauge({
      name: 'nox_policy_resources',
      help: 'Resources in the snapshot in force, by kind and state (accepted, rejected, warning).',
      labelNames: ['kind', 'state'],
      registers: [registry],
    });
    this.#versionGauge = new Gauge({
      name: 'nox_policy_snapshot_version',
      help: 'Version of the policy snapshot in force (0: none loaded).',
      registers: [registry],
    });
    this.#versionGauge.set(0);
  }

  get current(): Snapshot | undefined {
    return this.#current;
  }

  /**
   * A source is starting: until its first snapshot, a check waits for it (whenLoaded) rather
   * than being refused NOT_READY at once. A restarted sidecar that Envoy reaches before it has
   * read its policies (its port opens first, so that health checks can say NOT_SERVING) would
   * otherwise deny the checks of those few milliseconds, which the policy may allow.
   */
  expectSource(): void {
    this.#expecting = true;
  }

  /** The snapshot in force, waiting up to `ms` for the first one when a source is expected. */
  whenLoaded(ms: number): Promise<Snapshot | undefined> {
    if (this.#current || !this.#expecting || ms <= 0) return Promise.resolve(this.#current);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve(this.#current);
      };
      const timer = setTimeout(() => {
        this.#firstWaiters = this.#firstWaiters.filter((w) => w !== done);
        resolve(this.#current);
      }, ms);
      this.#firstWaiters.push(done);
    });
  }

  onSwap(listener: (s: Snapshot) => void): void {
    this.#listeners.push(listener);
  }

  apply(state: SourceState): Snapshot {
    const next = compileSnapshot(state, this.#current, this.#version + 1, new Date(), this.options);
    this.#version = next.version;
    this.#current = next;
    this.#versionGauge.set(next.version);
    this.#compiles.inc({ result: next.rejected.length === 0 ? 'ok' : 'partial' });
    this.#resources.reset();
    for (const r of next.accepted.values()) this.#resources.inc({ kind: r.kind, state: 'accepted' });
    for (const r of next.rejected) {
      const kind = r.key.includes('/') ? r.key.split('/')[0]! : 'file';
      this.#resources.inc({ kind, state: 'rejected' });
      this.#rejections.inc({ kind, reason: 'invalid' });
      this.log.error(
        {
          resource: r.key,
          origin: r.origin,
          errors: r.errors,
          keptPrevious: r.keptPrevious,
          snapshot: next.version,
        },
        r.keptPrevious ? 'resource rejected; its previous version stays in force' : 'resource rejected',
      );
    }
    for (const w of next.warnings) {
      const kind = w.key.split('/')[0]!;
      this.#resources.inc({ kind, state: 'warning' });
      this.#rejections.inc({ kind, reason: 'unusable' });
      this.log.warn(
        { resource: w.key, problem: w.message, snapshot: next.version },
        'resource accepted but unusable as written',
      );
    }
    this.log.info(
      {
        snapshot: next.version,
        digest: next.digest,
        accepted: next.accepted.size,
        rejected: next.rejected.length,
      },
      'policy snapshot swapped',
    );
    for (const l of this.#listeners) l(next);
    for (const w of this.#firstWaiters.splice(0)) w();
    return next;
  }
}
