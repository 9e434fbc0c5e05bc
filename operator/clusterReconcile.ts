import { randomBytes } from 'node:crypto';
import type { KubernetesObject } from '@kubernetes/client-node';
import { pino } from 'pino';
import { describeError, type KubeClient, type KubeObject } from '../common/kube/client.js';
import { noxType, pods as podType, secrets as secretType } from '../common/kube/resources.js';
import type { Logger } from '../common/logger.js';
import type { ConditionReason, Problem } from './reasons.js';
import type { Condition } from './runtime/conditions.js';
import type { Applier, ObjectKey, ReconcileResult, Reconciler } from './runtime/types.js';

/** A data cluster (RedisCluster, PostgresCluster) as its reconciler reads it. */
export interface ClusterObject extends KubeObject {
  apiVersion: string;
  kind: 'RedisCluster' | 'PostgresCluster';
  status?: { conditions?: unknown[] };
}

export interface ClusterReconcilerOptions {
  /** Reads (the cluster, its Secrets and Pods) and the role records go through this. */
  readonly client: KubeClient;
  /** Children and status go through server-side apply. */
  readonly applier: Applier;
  readonly log?: Logger;
  readonly now?: () => Date;
  /** Come back this soon while the cluster converges. */
  readonly convergingRequeueMs?: number;
  /** And this soon when all is well, to notice trouble no watch event shows. */
  readonly healthyRequeueMs?: number;
  /** And this soon when blocked on something outside the cluster, e.g. a missing Secret (default 10000 ms). */
  readonly blockedRequeueMs?: number;
}

/** What differs between the kinds in the shared steps. */
export interface ClusterKindDefaults {
  readonly convergingRequeueMs: number;
  readonly healthyRequeueMs: number;
  /** The labels the cluster's StatefulSet selects its pods by. */
  readonly selectorLabels: (name: string) => Record<string, string>;
  readonly statefulSetOf: (name: string) => string;
}

/** What a reconcile read before applying: the cluster as it acts on it (a held change undone), and what its children need. */
export interface Prepared<C extends ClusterObject> {
  readonly cluster: C;
}

/** How a reconcile ends after the aspects ran: the status to write, and when to look again. */
export type Outcome<S> =
  /** `settled`: nothing is moving, so a Ready cluster waits the healthy interval. */
  { readonly status: S; readonly settled: boolean } | { readonly status: S; readonly requeueAfterMs: number };

/**
 * The reconcile both data-cluster kinds share (apply → observe → status):
 *
 *     read the cluster ──gone──▶ forget it
 *     validate the spec ──invalid──▶ status Accepted=False, terminal
 *     prepare (Secrets) ──blocked──▶ status Ready=False, requeue
 *     apply the children ──failed──▶ status ApplyFailed, retried with backoff
 *     observe the instances, run the kind's aspects, write status, requeue
 *
 * Each kind supplies the steps; the order, the status writes and the requeue policy live here.
 */
export abstract class ClusterReconciler<C extends ClusterObject, P extends Prepared<C>, O, S>
  implements Reconciler
{
  abstract readonly kind: C['kind'];
  protected readonly client: KubeClient;
  protected readonly applier: Applier;
  protected readonly log: Logger;
  protected readonly now: () => Date;
  readonly #requeue: { converging: number; healthy: number; blocked: number };
  readonly #kind: ClusterKindDefaults;

  constructor(opts: ClusterReconcilerOptions, defaults: ClusterKindDefaults) {
    this.#kind = defaults;
    this.client = opts.client;
    this.applier = opts.applier;
    this.log = opts.log ?? pino({ level: 'silent' });
    this.now = opts.now ?? (() => new Date());
    this.#requeue = {
      converging: opts.convergingRequeueMs ?? defaults.convergingRequeueMs,
      healthy: opts.healthyRequeueMs ?? defaults.healthyRequeueMs,
      blocked: opts.blockedRequeueMs ?? 10_000,
    };
  }

  /** Problems a user can fix in the spec; empty: valid. */
  protected abstract validate(cluster: C): string[];
  /** What the children and the observation need (passwords), or what blocks them. */
  protected abstract prepare(cluster: C, log: Logger): Promise<P | { problem: Problem }>;
  /** The owned children, applied as a whole. */
  protected abstract children(prepared: P): KubernetesObject[];
  /** The instances as they are now. */
  protected abstract observe(prepared: P): Promise<O>;
  /** The kind's aspects on what was observed, ending in the status to write. */
  protected abstract converge(prepared: P, observed: O, log: Logger): Promise<Outcome<S>>;
  /** The status when nothing was observed: a refused spec, or something blocking the apply. */
  protected abstract statusWithout(cluster: C, problem: { invalid: Problem } | { blocked: Problem }): S;
  /** The cluster is gone: drop what is kept about it in memory. */
  protected forget(_key: ObjectKey): void {}

  get convergingRequeueMs(): number {
    return this.#requeue.converging;
  }

  async reconcile(key: ObjectKey): Promise<ReconcileResult> {
    const cluster = await this.client.get<C>(noxType(this.kind), key);
    if (!cluster || cluster.metadata.deletionTimestamp) {
      this.forget(key);
      return { kind: 'done' }; // children go by owner references
    }
    const log = this.log.child({ [logKeyOf(this.kind)]: `${key.namespace}/${key.name}` });

    const problems = this.validate(cluster);
    if (problems.length) {
      const invalid: Problem = { reason: 'InvalidSpec', message: problems.join('; ') };
      await this.writeStatus(cluster, this.statusWithout(cluster, { invalid }));
      return { kind: 'terminal', ...invalid };
    }

    const prepared = await this.prepare(cluster, log);
    if ('problem' in prepared) {
      await this.writeStatus(cluster, this.statusWithout(cluster, { blocked: prepared.problem }));
      return { kind: 'requeue', afterMs: this.#requeue.blocked };
    }

    try {
      for (const child of this.children(prepared)) await this.applier.apply(child);
    } catch (e) {
      const blocked: Problem = { reason: 'ApplyFailed', message: describeError(e) };
      log.warn({ err: blocked.message }, 'applying children failed');
      await this.writeStatus(prepared.cluster, this.statusWithout(prepared.cluster, { blocked })).catch(
        () => {},
      );
      return { kind: 'error', error: e };
    }

    const observed = await this.observe(prepared);
    const outcome = await this.converge(prepared, observed, log);
    await this.writeStatus(prepared.cluster, outcome.status);
    if ('requeueAfterMs' in outcome) return { kind: 'requeue', afterMs: outcome.requeueAfterMs };
    return {
      kind: 'requeue',
      afterMs: isReady(outcome.status) && outcome.settled ? this.#requeue.healthy : this.#requeue.converging,
    };
  }

  /** The blocked interval, for a kind that holds a change back after observing. */
  protected get blockedRequeueMs(): number {
    return this.#requeue.blocked;
  }

  /** The pods of the cluster's StatefulSet. */
  protected pods(cluster: C): Promise<ClusterPod[]> {
    const { name, namespace } = cluster.metadata;
    return listClusterPods(
      this.client,
      namespace!,
      this.#kind.selectorLabels(name),
      this.#kind.statefulSetOf(name),
    );
  }

  protected async writeStatus(cluster: C, status: S): Promise<void> {
    await this.applier.applyStatus({
      apiVersion: cluster.apiVersion,
      kind: cluster.kind,
      metadata: { name: cluster.metadata.name, namespace: cluster.metadata.namespace },
      status,
    });
  }
}

function logKeyOf(kind: ClusterObject['kind']): string {
  return kind === 'RedisCluster' ? 'redisCluster' : 'postgresCluster';
}

function isReady(status: unknown): boolean {
  const conditions = (status as { conditions?: Condition[] } | undefined)?.conditions;
  return conditions?.find((c) => c.type === 'Ready')?.status === 'True';
}

/** A pod of a cluster's StatefulSet, as the reconcilers look at it. */
export interface ClusterPod {
  readonly name: string;
  readonly ordinal: number;
  readonly ip?: string;
  /** Ready and not being deleted. */
  readonly ready: boolean;
  /** Every container runs. */
  readonly running: boolean;
  readonly nodeName?: string;
  readonly labels: Record<string, string>;
  readonly annotations: Record<string, string>;
}

type Pod = KubeObject & {
  spec?: { nodeName?: string };
  status?: {
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { state?: { running?: unknown } }[];
  };
};

/** The pods of StatefulSet `statefulSet` (`<name>-<ordinal>`) among those matching `selector`, in list order. */
export async function listClusterPods(
  client: KubeClient,
  namespace: string,
  selector: Record<string, string>,
  statefulSet: string,
): Promise<ClusterPod[]> {
  const list = await client.list<Pod>(podType, {
    namespace,
    labelSelector: Object.entries(selector)
      .map(([k, v]) => `${k}=${v}`)
      .join(','),
  });
  const ordinalRe = new RegExp(`^${statefulSet.replaceAll('.', '\\.')}-(\\d+)$`);
  return list.items.flatMap((p): ClusterPod[] => {
    const m = ordinalRe.exec(p.metadata.name ?? '');
    if (!m) return [];
    const ip = p.status?.podIP || undefined;
    const statuses = p.status?.containerStatuses;
    return [
      {
        name: p.metadata.name,
        ordinal: Number(m[1]),
        ...(ip ? { ip } : {}),
        ready:
          !p.metadata.deletionTimestamp &&
          (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True'),
        running: !!statuses?.length && statuses.every((s) => s.state?.running !== undefined),
        ...(p.spec?.nodeName ? { nodeName: p.spec.nodeName } : {}),
        labels: p.metadata.labels ?? {},
        annotations: p.metadata.annotations ?? {},
      },
    ];
  });
}

/**
 * A cluster's password: from the Secret the user named (`given`: a problem with `reason` when
 * it is missing or empty), or the generated Secret's, made on first use and then kept.
 */
export async function clusterPassword(
  client: KubeClient,
  namespace: string,
  ref: { name: string; key: string },
  given: { field: string; reason: ConditionReason } | undefined,
): Promise<{ value: string; generated: boolean } | { problem: Problem }> {
  const secret = await client.get<KubeObject & { data?: Record<string, string> }>(secretType, {
    namespace,
    name: ref.name,
  });
  const stored = secret?.data?.[ref.key];
  const value = stored !== undefined ? Buffer.from(stored, 'base64').toString('utf8') : undefined;
  if (given) {
    if (!value)
      return {
        problem: {
          reason: given.reason,
          message: `Secret ${namespace}/${ref.name} with key "${ref.key}" (spec.${given.field}) does not exist or is empty`,
        },
      };
    return { value, generated: false };
  }
  return { value: value || randomBytes(24).toString('base64url'), generated: true };
}
