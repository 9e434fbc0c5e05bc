import { sleep } from '../../common/backoff.js';
import { describeError, isConflict, type KubeClient, type KubeObject } from '../../common/kube/client.js';
import { leases } from '../../common/kube/resources.js';
import type { Logger } from '../../common/logger.js';
import type { OperatorMetrics } from './metrics.js';

/**
 * Leader election through a coordination.k8s.io/v1 Lease (client-go's algorithm):
 *
 * - a candidate takes the Lease when it is free (no holder: released) or when its record
 *   has not changed for leaseDuration, timed on the candidate's own clock from when it
 *   last saw it change (never from the holder's timestamps: clocks may disagree);
 * - every write is a PUT with the resourceVersion read, so two candidates cannot both win;
 * - the leader renews every retryPeriod and gives up leading if it has not renewed for
 *   renewDeadline (< leaseDuration, so it stops before anyone else may start);
 * - on shutdown the leader stops its work first, then releases the Lease, so a successor
 *   takes over within one retryPeriod instead of waiting out the lease.
 */

export interface LeaderElectionTiming {
  /** How long a Lease not renewed stays someone's. Default 15 s. */
  leaseDurationMs: number;
  /** A leader that could not renew for this long stops leading. Default 10 s. */
  renewDeadlineMs: number;
  /** Interval of attempts (candidates) and renewals (leader). Default 2 s. */
  retryPeriodMs: number;
}

export const defaultTiming: LeaderElectionTiming = {
  leaseDurationMs: 15_000,
  renewDeadlineMs: 10_000,
  retryPeriodMs: 2_000,
};

export interface LeaderElectionOptions extends Partial<LeaderElectionTiming> {
  client: KubeClient;
  namespace: string;
  /** Lease name. */
  name: string;
  /** This replica's identity (pod name plus a random suffix is unique enough). */
  identity: string;
  log: Logger;
  metrics: OperatorMetrics;
  /** Called when this replica becomes the leader. */
  onStartedLeading(): void | Promise<void>;
  /** Called when it stops leading (lost, or shutting down); the Lease is released after this resolves. */
  onStoppedLeading(): void | Promise<void>;
}

interface LeaseSpec {
  holderIdentity?: string | null;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}
interface Lease extends KubeObject {
  spec?: LeaseSpec;
}

type Attempt = 'acquired' | 'held' | 'error';

export function validateTiming(t: LeaderElectionTiming): void {
  if (!(t.leaseDurationMs > t.renewDeadlineMs))
    throw new Error('leader election: lease duration must be greater than the renew deadline');
  if (!(t.renewDeadlineMs > t.retryPeriodMs * 1.2))
    throw new Error('leader election: renew deadline must be greater than 1.2 × the retry period');
  if (!(t.retryPeriodMs >= 100)) throw new Error('leader election: retry period must be at least 100 ms');
}

/** metav1.MicroTime: RFC 3339 with microseconds. */
function microTime(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 23)}000Z`;
}

export class LeaderElector {
  readonly #opts: LeaderElectionOptions;
  readonly #t: LeaderElectionTiming;
  readonly #log: Logger;
  #leader = false;
  #observed: { record: string; at: number; holder: string } | undefined;

  constructor(opts: LeaderElectionOptions) {
    this.#opts = opts;
    this.#t = {
      leaseDurationMs: opts.leaseDurationMs ?? defaultTiming.leaseDurationMs,
      renewDeadlineMs: opts.renewDeadlineMs ?? defaultTiming.renewDeadlineMs,
      retryPeriodMs: opts.retryPeriodMs ?? defaultTiming.retryPeriodMs,
    };
    validateTiming(this.#t);
    this.#log = opts.log.child({ component: 'leader-election', lease: `${opts.namespace}/${opts.name}` });
  }

  get isLeader(): boolean {
    return this.#leader;
  }

  get identity(): string {
    return this.#opts.identity;
  }

  /** The holder last seen in the Lease ('' when free or not read yet). */
  get observedLeader(): string {
    return this.#observed?.holder ?? '';
  }

  /** Campaigns, leads, and campaigns again after losing, until `signal` aborts; releases on the way out. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (!(await this.#acquire(signal))) break;
      this.#setLeader(true);
      this.#log.info({ identity: this.#opts.identity }, 'became leader');
      try {
        await this.#opts.onStartedLeading();
      } catch (e) {
        this.#log.error({ err: describeError(e) }, 'starting the leader’s work failed');
      }
      await this.#renewLoop(signal);
      this.#setLeader(false);
      try {
        await this.#opts.onStoppedLeading();
      } catch (e) {
        this.#log.error({ err: describeError(e) }, 'stopping the leader’s work failed');
      }
      if (signal.aborted) {
        await this.#release();
        break;
      }
      this.#log.warn('lost leadership; campaigning again');
    }
  }

  #setLeader(on: boolean): void {
    this.#leader = on;
    this.#opts.metrics.leader.set(on ? 1 : 0);
  }

  async #acquire(signal: AbortSignal): Promise<boolean> {
    let lastHolder: string | undefined;
    while (!signal.aborted) {
      const r = await this.#attempt();
      if (r === 'acquired') return true;
      const holder = this.observedLeader;
      if (r === 'held' && holder !== lastHolder) {
        this.#log.info({ leader: holder }, 'another replica is the leader; standing by');
        lastHolder = holder;
      }
      await sleep(this.#t.retryPeriodMs * (1 + Math.random() * 0.2), signal);
    }
    return false;
  }

  /** Returns when renewing failed for renewDeadline, someone else holds the Lease, or on abort. */
  async #renewLoop(signal: AbortSignal): Promise<void> {
    let lastRenew = Date.now();
    while (!signal.aborted) {
      await sleep(this.#t.retryPeriodMs, signal);
      if (signal.aborted) return;
      const r = await this.#attempt(Math.max(200, lastRenew + this.#t.renewDeadlineMs - Date.now()));
      if (r === 'acquired') {
        lastRenew = Date.now();
        continue;
      }
      if (r === 'held') {
        this.#log.error({ leader: this.observedLeader }, 'the Lease is held by another replica');
        return;
      }
      if (Date.now() - lastRenew >= this.#t.renewDeadlineMs) {
        this.#log.error({ renewDeadlineMs: this.#t.renewDeadlineMs }, 'could not renew the Lease in time');
        return;
      }
    }
  }

  #requestTimeout(limit?: number): number {
    return Math.max(100, Math.min(limit ?? Number.POSITIVE_INFINITY, this.#t.renewDeadlineMs / 2, 10_000));
  }

  async #attempt(timeLimitMs?: number): Promise<Attempt> {
    const { client, namespace, name, identity } = this.#opts;
    const timeoutMs = this.#requestTimeout(timeLimitMs);
    const durationSeconds = Math.ceil(this.#t.leaseDurationMs / 1000);
    try {
      const now = Date.now();
      const lease = await client
        .request<Lease>('GET', `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/${name}`, {
          timeoutMs,
        })
        .catch((e: unknown) => {
          if ((e as { code?: number }).code === 404) return undefined;
          throw e;
        });
      if (!lease) {
        const spec: LeaseSpec = {
          holderIdentity: identity,
          leaseDurationSeconds: durationSeconds,
          acquireTime: microTime(now),
          renewTime: microTime(now),
          leaseTransitions: 0,
        };
        try {
          await client.create(leases, { metadata: { name, namespace }, spec } as Lease);
        } catch (e) {
          if (isConflict(e)) return 'held';
          throw e;
        }
        this.#observe(spec, Date.now());
        return 'acquired';
      }
      const spec = lease.spec ?? {};
      this.#observe(spec, now);
      const holder = spec.holderIdentity ?? '';
      const mine = holder === identity;
      const observed = this.#observed as { at: number };
      const recordMs = (spec.leaseDurationSeconds ?? durationSeconds) * 1000;
      if (holder && !mine && observed.at + recordMs > now) return 'held';
      const next: LeaseSpec = {
        holderIdentity: identity,
        leaseDurationSeconds: durationSeconds,
        acquireTime: mine && spec.acquireTime ? spec.acquireTime : microTime(now),
        renewTime: microTime(now),
        leaseTransitions: mine ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1,
      };
      try {
        await client.update(leases, { ...lease, spec: next }, { timeoutMs });
      } catch (e) {
        // Someone else wrote it between our read and write: read again next time.
        if (isConflict(e)) return mine ? 'error' : 'held';
        throw e;
      }
      this.#observe(next, Date.now());
      return 'acquired';
    } catch (e) {
      this.#log.warn({ err: describeError(e) }, 'lease request failed');
      return 'error';
    }
  }

  #observe(spec: LeaseSpec, at: number): void {
    const record = JSON.stringify([
      spec.holderIdentity ?? '',
      spec.renewTime ?? '',
      spec.acquireTime ?? '',
      spec.leaseTransitions ?? 0,
      spec.leaseDurationSeconds ?? 0,
    ]);
    if (this.#observed?.record !== record) this.#observed = { record, at, holder: spec.holderIdentity ?? '' };
  }

  /** Gives the Lease up (holder cleared), so a successor does not wait out the duration. */
  async #release(): Promise<void> {
    const { client, namespace, name, identity } = this.#opts;
    try {
      const lease = await client.get<Lease>(leases, { namespace, name });
      if (!lease || lease.spec?.holderIdentity !== identity) return;
      const now = Date.now();
      await client.update(
        leases,
        {
          ...lease,
          spec: {
            leaseDurationSeconds: 1,
            acquireTime: microTime(now),
            renewTime: microTime(now),
            leaseTransitions: lease.spec?.leaseTransitions ?? 0,
          },
        } as Lease,
        { timeoutMs: this.#requestTimeout() },
      );
      this.#log.info('released the Lease');
    } catch (e) {
      this.#log.warn(
        { err: describeError(e) },
        'could not release the Lease; successors wait for it to expire',
      );
    }
  }
}
