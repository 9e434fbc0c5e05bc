import type { KubernetesObject } from '@kubernetes/client-node';
import type { KubeObject } from '../../common/kube/client.js';
import { statefulSets } from '../../common/kube/resources.js';
import type { Logger } from '../../common/logger.js';
import type { PostgresClusterStatus } from '../../common/resources/types.gen.js';
import {
  ClusterReconciler,
  type ClusterReconcilerOptions,
  clusterPassword,
  type Outcome,
} from '../clusterReconcile.js';
import type { Problem } from '../reasons.js';
import type { ObjectKey } from '../runtime/types.js';
import { bootstrapInstance, designateFirstPrimary } from './bootstrap.js';
import {
  appPasswordRef,
  childList,
  configVersion,
  desiredChildren,
  fencedInstances,
  namesOf,
  ordinalOf,
  selectorLabels,
  superuserPasswordRef,
  synchronousStandbyNames,
  syncNumber,
  validateSpec,
} from './desired.js';
import { fenceOtherPrimaries, handlePrimaryHealth, PrimaryLoss } from './failover.js';
import { type InstanceAccess, observeInstance } from './instances.js';
import { forgetClusterMetrics, type PostgresMetrics, recordClusterMetrics } from './metrics.js';
import { attachReplicas, rejoinFenced, rewindStranded } from './rejoin.js';
import { rollRestarts } from './restarts.js';
import { type InstanceView, isHealthyPrimary, PRIMARY_ANNOTATION, scaleDownProblem } from './roles.js';
import { type ScaleDownGate, scaleDownStep } from './scaleDown.js';
import { SchemaMigrations } from './schema.js';
import { manageSlots } from './slots.js';
import { type AspectContext, type Cluster, type ClusterState, labelPods, primaryView } from './state.js';
import { computeStatus } from './status.js';
import { switchOver } from './switchover.js';

/** Defaults: converging 1000 ms, healthy 10000 ms. */
export interface PostgresClusterReconcilerOptions extends ClusterReconcilerOptions {
  readonly metrics?: PostgresMetrics;
}

interface Prepared {
  /** The cluster as this reconcile acts on it: a scale-down that would remove the primary held back. */
  readonly cluster: Cluster;
  readonly superuserPassword: string;
  /** The application role's password: the schema migrations run as that role. */
  readonly appPassword: string;
  /** The passwords of the Secrets the operator generates (made once, then kept). */
  readonly generated: { superuserPassword?: string; appPassword?: string };
  readonly scaleDown?: Problem;
  /** Replicas to remove once that is safe (scaleDown.ts): the StatefulSet keeps `from` until then. */
  readonly shrink?: { readonly from: number; readonly to: number };
}

/**
 * PostgresCluster: Secrets, ConfigMap, Services, StatefulSet and PodDisruptionBudget by
 * server-side apply (desired.ts), then the roles: which pod is primary is recorded on the
 * cluster (annotation nox.dev/primary, changed only by compare-and-swap on its
 * resourceVersion, so two promotions can never both succeed) and mirrored onto the pods'
 * nox.dev/role label, which the -rw/-ro Services select on and the instance manager in each
 * pod acts on (instanceManager.ts).
 *
 * The sequence is clusterReconcile.ts's (read → children → apply → observe → status); the
 * roles are decided by one aspect per file, in this order, on one ClusterState (state.ts):
 * bootstrap, failover, switchover, rejoin (and stranded replicas rewound), pod labels, slots,
 * restarts, split-brain fencing.
 */
export class PostgresClusterReconciler extends ClusterReconciler<
  Cluster,
  Prepared,
  InstanceView[],
  PostgresClusterStatus
> {
  readonly kind = 'PostgresCluster';
  readonly #loss = new PrimaryLoss();
  readonly #metrics: PostgresMetrics | undefined;
  readonly #schema: SchemaMigrations;
  /** Per cluster: the scale-down under way, and whether it may now shrink the StatefulSet. */
  readonly #shrinks = new Map<string, ScaleDownGate & { released?: boolean }>();

  constructor(opts: PostgresClusterReconcilerOptions) {
    super(opts, {
      convergingRequeueMs: 1000,
      healthyRequeueMs: 10_000,
      selectorLabels,
      statefulSetOf: (name) => namesOf(name).statefulSet,
    });
    this.#metrics = opts.metrics;
    this.#schema = new SchemaMigrations({ client: this.client, log: this.log, now: this.now });
  }

  protected validate(cluster: Cluster): string[] {
    return validateSpec(cluster.spec, cluster.metadata.name);
  }

  protected async prepare(cluster: Cluster, log: Logger): Promise<Prepared | { problem: Problem }> {
    const password = (ref: { name: string; key: string }, field: 'superuserSecretRef' | 'appSecretRef') =>
      clusterPassword(
        this.client,
        cluster.metadata.namespace!,
        ref,
        cluster.spec[field] ? { field, reason: 'SecretNotFound' } : undefined,
      );
    const superuser = await password(superuserPasswordRef(cluster), 'superuserSecretRef');
    if ('problem' in superuser) return superuser;
    const app = await password(appPasswordRef(cluster), 'appSecretRef');
    if ('problem' in app) return app;
    const generated = {
      ...(superuser.generated ? { superuserPassword: superuser.value } : {}),
      ...(app.generated ? { appPassword: app.value } : {}),
    };
    const prepared = { cluster, superuserPassword: superuser.value, appPassword: app.value, generated };

    // A scale-down that would remove the primary waits (a switchover can move it first): until
    // then this reconcile acts on a spec that keeps the instances up to the primary's.
    const primary = cluster.metadata.annotations?.[PRIMARY_ANNOTATION];
    const scaleDown = scaleDownProblem(primary, cluster.spec.instances);
    if (scaleDown)
      log.warn({ instances: cluster.spec.instances }, 'scale-down waits: it would remove the primary');
    const acting = scaleDown
      ? {
          ...prepared,
          cluster: { ...cluster, spec: { ...cluster.spec, instances: ordinalOf(primary!) + 1 } },
          scaleDown,
        }
      : prepared;
    return { ...acting, ...(await this.#shrink(acting.cluster)) };
  }

  /** A scale-down the StatefulSet does not make yet (scaleDown.ts). */
  async #shrink(cluster: Cluster): Promise<{ shrink?: Prepared['shrink'] }> {
    const key = `${cluster.metadata.namespace}/${cluster.metadata.name}`;
    const sts = await this.client.get<KubeObject & { spec?: { replicas?: number } }>(statefulSets, {
      namespace: cluster.metadata.namespace!,
      name: namesOf(cluster.metadata.name).statefulSet,
    });
    const from = sts?.spec?.replicas ?? 0;
    const to = cluster.spec.instances;
    const gate = this.#shrinks.get(key);
    if (from <= to || (gate?.to === to && gate.released)) {
      if (from <= to) this.#shrinks.delete(key);
      return {};
    }
    return { shrink: { from, to } };
  }

  protected children({ cluster, generated, shrink }: Prepared): KubernetesObject[] {
    return childList(
      desiredChildren(cluster, { ...generated, ...(shrink ? { statefulSetReplicas: shrink.from } : {}) }),
    );
  }

  /** The cluster's pods and what each instance says over SQL. */
  protected async observe({ cluster, superuserPassword }: Prepared): Promise<InstanceView[]> {
    const access: InstanceAccess = { password: superuserPassword };
    const pods = await this.pods(cluster);
    const views = await Promise.all(
      pods.map(
        async (p): Promise<InstanceView> => ({
          pod: p.name,
          ordinal: p.ordinal,
          ...(p.ip ? { ip: p.ip } : {}),
          ready: p.ready,
          running: p.running,
          labels: p.labels,
          annotations: p.annotations,
          ...(p.ip ? { obs: await observeInstance(p.ip, access) } : {}),
        }),
      ),
    );
    return views.sort((a, b) => a.ordinal - b.ordinal);
  }

  protected async converge(
    prepared: Prepared,
    views: InstanceView[],
    log: Logger,
  ): Promise<Outcome<PostgresClusterStatus>> {
    const { cluster } = prepared;
    const key = { namespace: cluster.metadata.namespace!, name: cluster.metadata.name };
    const ctx: AspectContext = {
      client: this.client,
      access: { password: prepared.superuserPassword },
      log,
      now: this.now,
      countPrimaryChange: (kind) =>
        this.#metrics?.failovers.inc({ namespace: key.namespace, cluster: key.name, kind }),
    };
    const state: ClusterState = {
      cluster,
      views,
      designated: cluster.metadata.annotations?.[PRIMARY_ANNOTATION],
      fenced: new Set(fencedInstances(cluster.metadata.annotations)),
      currentPrimary: cluster.status?.currentPrimary,
      lastFailover: cluster.status?.lastFailover,
      problem: undefined,
    };

    await designateFirstPrimary(ctx, state);
    const failoverDelay = await handlePrimaryHealth(ctx, state, {
      loss: this.#loss,
      id: `${key.namespace}/${key.name}`,
    });
    if (failoverDelay)
      return {
        status: this.#status(state),
        requeueAfterMs: Math.min(failoverDelay.retryInMs, this.convergingRequeueMs),
      };
    await switchOver(ctx, state);
    const primaryHealthy = isHealthyPrimary(primaryView(state));
    if (primaryHealthy) {
      await rejoinFenced(ctx, state);
      await attachReplicas(ctx, state);
      await rewindStranded(ctx, state);
    }
    await labelPods(
      this.client,
      state.cluster,
      views,
      state.designated,
      state.fenced,
      bootstrapInstance(state),
    );
    if (primaryHealthy && state.designated) {
      await manageSlots(ctx, state);
      if (!state.problem && !state.cluster.spec.switchoverTo) await rollRestarts(ctx, state);
    }
    await fenceOtherPrimaries(ctx, state);
    const shrinkWaits = this.#gateShrink(key, prepared, state, log);

    const status = await this.#schema.apply(
      {
        cluster: state.cluster,
        primaryHealthy,
        primary: state.designated,
        appPassword: prepared.appPassword,
      },
      this.#status(state, prepared.scaleDown),
    );
    if (this.#metrics) recordClusterMetrics(this.#metrics, key, primaryHealthy, status);
    // A restart roll-out moves on when an instance has read the new configuration and no longer
    // reports pending_restart, which no pod event announces: keep looking as often as while
    // converging.
    const version = configVersion(state.cluster);
    const settled =
      !shrinkWaits &&
      !views.some((v) => v.obs?.pendingRestart || (v.obs?.reachable && v.obs.configVersion !== version));
    return { status, settled };
  }

  /** Moves a held scale-down on (scaleDown.ts); true while it still waits. */
  #gateShrink(key: ObjectKey, prepared: Prepared, state: ClusterState, log: Logger): boolean {
    if (!prepared.shrink) return false;
    const id = `${key.namespace}/${key.name}`;
    const step = scaleDownStep({
      ...prepared.shrink,
      names: synchronousStandbyNames(prepared.cluster),
      syncNumber: syncNumber(prepared.cluster.spec),
      primary: primaryView(state),
      gate: this.#shrinks.get(id),
    });
    if (step.release) {
      this.#shrinks.set(id, { to: prepared.shrink.to, released: true });
      log.info(
        prepared.shrink,
        'scale-down: the staying replicas have every acknowledged commit; shrinking the StatefulSet',
      );
      return true; // the next reconcile applies the smaller StatefulSet
    }
    this.#shrinks.set(id, step.gate);
    log.info({ ...prepared.shrink, waitingFor: step.waitingFor }, 'scale-down waits');
    return true;
  }

  protected statusWithout(
    cluster: Cluster,
    problem: { invalid: Problem } | { blocked: Problem },
  ): PostgresClusterStatus {
    const state = {
      cluster,
      views: [],
      designated: undefined,
      fenced: new Set<string>(),
      currentPrimary: cluster.status?.currentPrimary,
      lastFailover: cluster.status?.lastFailover,
    };
    return computeStatus({ ...state, ...problem, now: this.now() });
  }

  #status(state: ClusterState, blocked?: Problem): PostgresClusterStatus {
    const { cluster, views, designated, fenced, currentPrimary, lastFailover, problem } = state;
    return computeStatus({
      cluster,
      views,
      designated,
      fenced,
      currentPrimary,
      ...(lastFailover ? { lastFailover } : {}),
      ...(problem ? { failover: problem } : {}),
      ...(blocked ? { blocked } : {}),
      now: this.now(),
    });
  }

  protected override forget(key: ObjectKey): void {
    this.#loss.recovered(`${key.namespace}/${key.name}`);
    this.#shrinks.delete(`${key.namespace}/${key.name}`);
    this.#schema.forget(key);
    if (this.#metrics) forgetClusterMetrics(this.#metrics, key);
  }
}
