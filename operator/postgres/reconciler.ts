import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import {
  describeError,
  isConflict,
  type KubeClient,
  type KubeObject,
  objectPath,
} from '../../common/kube/client.js';
import { noxTypes, pods as podType, secrets as secretType } from '../../common/kube/resources.js';
import type { Logger } from '../../common/logger.js';
import type { PostgresCluster, PostgresClusterStatus } from '../../common/resources/types.gen.js';
import type { Applier, ObjectKey, ReconcileResult, Reconciler } from '../runtime/types.js';
import {
  appPasswordRef,
  childList,
  desiredChildren,
  failoverDelayMs,
  fencedInstances,
  fencedInstancesPatch,
  namesOf,
  ordinalOf,
  PASSWORD_KEY,
  selectorLabels,
  slotName,
  superuserPasswordRef,
  syncNumber,
  validateSpec,
  walReceiptStopped,
} from './desired.js';
import { RESTART_ANNOTATION } from './instanceManager.js';
import { dropSlots, ensureSlots, type InstanceAccess, observeInstance, promote } from './instances.js';
import type { PostgresMetrics } from './metrics.js';
import {
  type InstanceView,
  isHealthyPrimary,
  isStreamingReplica,
  orphanSlots,
  otherPrimaries,
  PRIMARY_ANNOTATION,
  planFailover,
  podPatches,
  scaleDownProblem,
} from './roles.js';
import { computeStatus, type Problem } from './status.js';

export interface PostgresClusterReconcilerOptions {
  readonly client: KubeClient;
  readonly applier: Applier;
  readonly log?: Logger;
  readonly now?: () => Date;
  /** Come back this soon while something is converging (default 1000 ms). */
  readonly convergingRequeueMs?: number;
  /** And this soon when all is well, to notice trouble the pod watch does not show (default 10000 ms). */
  readonly healthyRequeueMs?: number;
  /** Two samples of the replicas' received positions this far apart prove WAL stopped arriving (default 300 ms). */
  readonly walSampleGapMs?: number;
  readonly metrics?: PostgresMetrics;
}

const clusterType = noxTypes.PostgresCluster!;
type Pod = KubeObject & {
  spec?: { nodeName?: string };
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * PostgresCluster: Secrets, ConfigMap, Services, StatefulSet and PodDisruptionBudget by
 * server-side apply (desired.ts), then the roles: which pod is primary is recorded on the
 * cluster (annotation nox.dev/primary, changed only by compare-and-swap on its
 * resourceVersion, so two promotions can never both succeed) and mirrored onto the pods'
 * nox.dev/role label, which the -rw/-ro Services select on and the instance manager in each
 * pod acts on (instanceManager.ts).
 *
 * Failover, when the primary has not been healthy for spec.failover.delay: fence it (durably
 * on the cluster, then on its pod, so it never runs as primary again), make sure it does not
 * answer as a primary, wait until the replicas' received WAL positions stop moving, promote
 * the most advanced replica (planFailover), repoint the labels and create the replication
 * slots the other replicas stream through. A fenced instance whose pod runs again rejoins as a
 * replica (pg_rewind). Status: primary, per-instance positions and lag, last failover.
 */
export class PostgresClusterReconciler implements Reconciler {
  readonly kind = 'PostgresCluster';
  readonly #log: Logger;
  readonly #now: () => Date;
  /** Since when the designated primary is not healthy, per cluster (in memory: a restart only delays). */
  readonly #lostSince = new Map<string, number>();

  constructor(private readonly opts: PostgresClusterReconcilerOptions) {
    this.#log = opts.log ?? pino({ level: 'silent' });
    this.#now = opts.now ?? (() => new Date());
  }

  async reconcile(key: ObjectKey): Promise<ReconcileResult> {
    const id = `${key.namespace}/${key.name}`;
    let cluster = await this.opts.client.get<PostgresCluster & KubeObject>(clusterType, key);
    if (!cluster || cluster.metadata.deletionTimestamp) {
      this.#lostSince.delete(id);
      this.#forgetMetrics(key);
      return { kind: 'done' }; // children go by owner references
    }
    const log = this.#log.child({ postgresCluster: id });
    let spec = cluster.spec;
    const converging = this.opts.convergingRequeueMs ?? 1000;

    const problems = validateSpec(spec, cluster.metadata.name);
    if (problems.length) {
      const invalid = { reason: 'InvalidSpec', message: problems.join('; ') };
      await this.#writeStatus(cluster, { views: [], invalid });
      return { kind: 'terminal', ...invalid };
    }

    const passwords = await this.#passwords(cluster);
    if ('problem' in passwords) {
      await this.#writeStatus(cluster, { views: [], blocked: passwords.problem });
      return { kind: 'requeue', afterMs: 10_000 };
    }
    // A scale-down that would remove the primary waits (a switchover can move it first): until
    // then this reconcile acts on a spec that keeps the instances up to the primary's.
    const scaleDown = scaleDownProblem(cluster.metadata.annotations?.[PRIMARY_ANNOTATION], spec.instances);
    if (scaleDown) {
      log.warn({ instances: spec.instances }, 'scale-down waits: it would remove the primary');
      const keep = ordinalOf(cluster.metadata.annotations![PRIMARY_ANNOTATION]!) + 1;
      cluster = { ...cluster, spec: { ...spec, instances: keep } };
      spec = cluster.spec;
    }
    try {
      const children = desiredChildren(cluster, passwords.generated);
      for (const child of childList(children)) await this.opts.applier.apply(child);
    } catch (e) {
      const blocked = { reason: 'ApplyFailed', message: describeError(e) };
      log.warn({ err: blocked.message }, 'applying children failed');
      await this.#writeStatus(cluster, { views: [], blocked }).catch(() => {});
      return { kind: 'error', error: e };
    }

    const access: InstanceAccess = { password: passwords.superuser };
    const views = await this.#observe(cluster, access);
    let designated = cluster.metadata.annotations?.[PRIMARY_ANNOTATION];
    const fenced = new Set(fencedInstances(cluster.metadata.annotations));
    let lastFailover = cluster.status?.lastFailover;
    let currentPrimary = cluster.status?.currentPrimary;
    let failoverProblem: Problem | undefined;

    // A new cluster: the first instance is bootstrapped as primary. An existing primary whose
    // record was lost (the annotation removed by hand) is adopted rather than replaced.
    if (!designated) {
      const primaries = views.filter((v) => v.obs?.reachable && v.obs.inRecovery === false);
      const pick =
        primaries.length === 1 ? primaries[0]!.pod : primaries.length === 0 ? `${key.name}-0` : undefined;
      if (pick && views.some((v) => v.pod === pick)) {
        cluster = await this.#casAnnotations(cluster, { [PRIMARY_ANNOTATION]: pick });
        designated = pick;
        log.info({ primary: pick }, 'designated the first primary');
      }
    }

    const primary = views.find((v) => v.pod === designated);
    if (isHealthyPrimary(primary)) {
      this.#lostSince.delete(id);
      currentPrimary = designated;
    } else if (designated && primary?.obs?.reachable && primary.obs.inRecovery && primary.ready) {
      // Designated but still a replica: a failover or switchover was recorded and the
      // promotion is still to be done (or the operator stopped between the two). After a
      // switchover the former primary must first have finished its clean shutdown (which
      // sends every WAL record to the standbys still streaming from it) and be back as a
      // replica, or be gone: while it is shutting down it refuses connections, which alone
      // proves nothing.
      const previous =
        currentPrimary !== designated ? views.find((v) => v.pod === currentPrimary) : undefined;
      if (
        previous &&
        !fenced.has(previous.pod) &&
        previous.running &&
        !(previous.obs?.reachable && previous.obs.inRecovery)
      )
        failoverProblem = {
          reason: 'WaitingForOldPrimary',
          message: `${previous.pod} is shutting down; ${designated} is promoted once it follows as a replica`,
        };
      else failoverProblem = await this.#promote(cluster, primary, access, log, views);
    } else if (designated && currentPrimary !== undefined && spec.failover?.enabled !== false) {
      const since = this.#lostSince.get(id) ?? this.#now().getTime();
      this.#lostSince.set(id, since);
      const waitedMs = this.#now().getTime() - since;
      const delay = failoverDelayMs(spec);
      if (waitedMs < delay) {
        failoverProblem = {
          reason: 'PrimaryUnavailable',
          message: `primary ${designated} is not healthy; failover in ${Math.ceil((delay - waitedMs) / 1000)} s unless it recovers`,
        };
        await this.#writeStatus(cluster, {
          views,
          designated,
          fenced,
          currentPrimary,
          lastFailover,
          failover: failoverProblem,
        });
        return { kind: 'requeue', afterMs: Math.min(delay - waitedMs + 20, converging) };
      }
      const outcome = await this.#failover(cluster, views, designated, fenced, access, log);
      cluster = outcome.cluster;
      if ('problem' in outcome) failoverProblem = outcome.problem;
      else {
        lastFailover = outcome.record;
        designated = outcome.record.to;
        this.#lostSince.delete(id);
        this.opts.metrics?.failovers.inc({ namespace: key.namespace, cluster: key.name, kind: 'failover' });
      }
    }

    // Switchover on request: the primary is labelled replica (its instance manager shuts it
    // down cleanly, so the target receives every WAL record), then the target is promoted.
    if (
      spec.switchoverTo &&
      designated &&
      spec.switchoverTo !== designated &&
      isHealthyPrimary(views.find((v) => v.pod === designated))
    ) {
      const target = views.find((v) => v.pod === spec.switchoverTo);
      if (target && isStreamingReplica(target) && !fenced.has(target.pod)) {
        const from = designated;
        cluster = await this.#casAnnotations(cluster, { [PRIMARY_ANNOTATION]: target.pod });
        designated = target.pod;
        lastFailover = {
          time: this.#now().toISOString(),
          from,
          to: target.pod,
          reason: 'switchover requested (spec.switchoverTo)',
        };
        log.info({ from, to: target.pod }, 'switchover');
        this.opts.metrics?.failovers.inc({ namespace: key.namespace, cluster: key.name, kind: 'switchover' });
      } else {
        failoverProblem = {
          reason: 'SwitchoverWaiting',
          message: `switchover to ${spec.switchoverTo} waits until it is a streaming replica`,
        };
      }
    }

    // Fenced instances whose pods run again rejoin as replicas once the primary is healthy.
    const healthyNow = isHealthyPrimary(views.find((v) => v.pod === designated));
    if (healthyNow) {
      const back = [...fenced].filter((p) => p !== designated && views.some((v) => v.pod === p && v.running));
      if (back.length) {
        for (const p of back) fenced.delete(p);
        cluster = await this.#casAnnotations(cluster, fencedInstancesPatch([...fenced]).metadata.annotations);
        log.info({ instances: back }, 'fenced instances rejoin as replicas');
      }
    }

    // Only the first primary of a cluster that never had one may initialise an empty database.
    await this.#patchPods(
      cluster,
      views,
      designated,
      fenced,
      currentPrimary === undefined ? designated : undefined,
    );

    if (healthyNow && designated) {
      const p = views.find((v) => v.pod === designated)!;
      const wanted = views
        .filter((v) => v.pod !== designated && v.ordinal < spec.instances)
        .map((v) => slotName(v.pod));
      const missing = wanted.filter((s) => !p.obs?.slots?.includes(s));
      const orphans = orphanSlots(p.obs?.slots ?? [], key.name, spec.instances);
      try {
        if (missing.length) await ensureSlots(p.ip!, access, missing);
        if (orphans.length) {
          const dropped = await dropSlots(p.ip!, access, orphans);
          if (dropped.length) log.info({ slots: dropped }, 'dropped the slots of removed instances');
        }
      } catch (e) {
        log.warn({ err: describeError(e) }, 'managing replication slots failed');
      }
    }

    if (healthyNow && designated && !failoverProblem && !spec.switchoverTo) {
      const rolled = await this.#rollRestarts(cluster, views, designated, fenced, log);
      if (rolled) {
        cluster = rolled.cluster;
        lastFailover = rolled.record;
        designated = rolled.record.to;
        this.opts.metrics?.failovers.inc({ namespace: key.namespace, cluster: key.name, kind: 'switchover' });
        await this.#patchPods(cluster, views, designated, fenced);
      }
    }

    const extra = otherPrimaries(views, designated);
    if (extra.length) {
      // Fencing stops them; until then they are reported (and -rw never routes to them).
      log.error(
        { instances: extra, primary: designated },
        'instances other than the primary answer as primaries',
      );
      failoverProblem ??= {
        reason: 'SplitBrainPrevented',
        message: `${extra.join(', ')} answer as primaries; they are fenced from -rw and stopped by their instance managers`,
      };
      for (const p of extra) fenced.add(p);
      await this.#patchPods(cluster, views, designated, fenced);
    }

    const status = await this.#writeStatus(cluster, {
      views,
      designated,
      fenced,
      currentPrimary,
      lastFailover,
      ...(failoverProblem ? { failover: failoverProblem } : {}),
      ...(scaleDown ? { blocked: scaleDown } : {}),
    });
    this.#recordMetrics(key, healthyNow, status);
    const ready = status.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
    // A restart roll-out moves on when an instance no longer reports pending_restart, which
    // no pod event announces: keep looking as often as while converging.
    const rolling = views.some((v) => v.obs?.pendingRestart);
    return {
      kind: 'requeue',
      afterMs: ready && !rolling ? (this.opts.healthyRequeueMs ?? 10_000) : converging,
    };
  }

  #recordMetrics(key: ObjectKey, primaryHealthy: boolean, status: PostgresClusterStatus): void {
    const m = this.opts.metrics;
    if (!m) return;
    const labels = { namespace: key.namespace, cluster: key.name };
    m.primaryHealthy.set(labels, primaryHealthy ? 1 : 0);
    for (const i of status.instances ?? [])
      if (i.pod && i.lagBytes !== undefined)
        m.replicaLagBytes.set({ ...labels, instance: i.pod }, i.lagBytes);
  }

  #forgetMetrics(key: ObjectKey): void {
    const m = this.opts.metrics;
    if (!m) return;
    const labels = { namespace: key.namespace, cluster: key.name };
    m.primaryHealthy.remove(labels);
    for (const kind of ['failover', 'switchover']) m.failovers.remove({ ...labels, kind });
    // Instances are named <cluster>-<ordinal>; at most 9 (the schema's maximum).
    for (let i = 0; i < 9; i++) m.replicaLagBytes.remove({ ...labels, instance: `${key.name}-${i}` });
  }

  /**
   * The failover steps, each a precondition of the next; any that does not hold yet returns
   * the reason and the next reconcile tries again from the top.
   */
  async #failover(
    cluster: PostgresCluster & KubeObject,
    views: readonly InstanceView[],
    old: string,
    fenced: Set<string>,
    access: InstanceAccess,
    log: Logger,
  ): Promise<
    | { cluster: PostgresCluster & KubeObject; problem: Problem }
    | { cluster: PostgresCluster & KubeObject; record: NonNullable<PostgresClusterStatus['lastFailover']> }
  > {
    // 1. Fence the old primary: on the cluster first (it survives the pod), then on the pod.
    if (!fenced.has(old)) {
      fenced.add(old);
      cluster = await this.#casAnnotations(cluster, fencedInstancesPatch([...fenced]).metadata.annotations);
      log.warn({ instance: old }, 'fenced the lost primary');
    }
    await this.#patchPods(cluster, views, old, fenced);

    // 2. It must not be answering as a primary (its instance manager stops it once fenced).
    const oldView = views.find((v) => v.pod === old);
    if (oldView?.ip) {
      const now = await observeInstance(oldView.ip, access);
      if (now.reachable && now.inRecovery === false)
        return {
          cluster,
          problem: {
            reason: 'FencingInProgress',
            message: `waiting for the fenced primary ${old} to stop before promoting a replica`,
          },
        };
    }

    // 3. The replicas must have stopped receiving WAL (nothing more can arrive from the old primary).
    const replicas = views.filter((v) => v.pod !== old && !fenced.has(v.pod) && v.ip);
    const sample = () =>
      Promise.all(replicas.map(async (v) => ({ ...v, obs: await observeInstance(v.ip!, access) })));
    const first = await sample();
    await sleep(this.opts.walSampleGapMs ?? 300);
    const second = await sample();
    const readable = (s: typeof first) =>
      s.filter((v) => v.obs.reachable).map((v) => ({ pod: v.pod, receivedLsn: v.obs.receivedLsn }));
    const both = readable(second).filter((r) => readable(first).some((f) => f.pod === r.pod));
    if (
      !walReceiptStopped(
        readable(first).filter((f) => both.some((b) => b.pod === f.pod)),
        both,
      )
    )
      return {
        cluster,
        problem: {
          reason: 'ReplicasStillReceiving',
          message: 'waiting until the replicas stop receiving WAL',
        },
      };

    // 4. The most advanced replica, if enough could be read to be sure it has every acknowledged commit.
    const plan = planFailover(second, cluster.spec.instances - 1, syncNumber(cluster.spec));
    if (plan.kind === 'wait') return { cluster, problem: { reason: plan.reason, message: plan.message } };

    // 5. Record the new primary (compare-and-swap: a concurrent decision makes this fail), then promote.
    cluster = await this.#casAnnotations(cluster, { [PRIMARY_ANNOTATION]: plan.target });
    const record = {
      time: this.#now().toISOString(),
      from: old,
      to: plan.target,
      reason: `primary ${old} lost for ${cluster.spec.failover?.delay ?? '5s'}; promoted the ${plan.reason}`,
    };
    log.warn(record, 'failover');
    const target = second.find((v) => v.pod === plan.target)!;
    const problem = await this.#promote(cluster, target, access, log, []);
    if (problem) return { cluster, problem };
    await this.#patchPods(cluster, views, plan.target, fenced);
    // The other replicas stream through slots of their own, which the new primary does not have yet.
    const slots = views
      .filter((v) => v.pod !== plan.target && v.ordinal < cluster.spec.instances)
      .map((v) => slotName(v.pod));
    await ensureSlots(target.ip!, access, slots).catch((e: unknown) =>
      log.warn({ err: describeError(e) }, 'creating replication slots failed'),
    );
    return { cluster, record };
  }

  /**
   * Settings that need a restart, rolled out the way that keeps writes going: one replica at a
   * time (only while every other replica streams), through the pod annotation the instance
   * manager obeys, with the cluster's generation as the request; then a switchover to the most
   * advanced replica, which restarts the former primary as it rejoins. A single instance is
   * restarted in place. Returns the switchover when it starts one.
   */
  async #rollRestarts(
    cluster: PostgresCluster & KubeObject,
    views: readonly InstanceView[],
    designated: string,
    fenced: ReadonlySet<string>,
    log: Logger,
  ): Promise<
    | { cluster: PostgresCluster & KubeObject; record: NonNullable<PostgresClusterStatus['lastFailover']> }
    | undefined
  > {
    const token = String(cluster.metadata.generation ?? 0);
    const primary = views.find((v) => v.pod === designated)!;
    const replicas = views.filter(
      (v) => v.pod !== designated && !fenced.has(v.pod) && v.ordinal < cluster.spec.instances,
    );
    if (!replicas.every(isStreamingReplica)) return undefined;
    const request = async (v: InstanceView) => {
      if (v.annotations[RESTART_ANNOTATION] === token) return; // asked already; it is restarting
      log.info({ instance: v.pod }, 'restarting to apply settings that need a restart');
      await this.opts.client.request(
        'PATCH',
        objectPath(podType, { namespace: cluster.metadata.namespace!, name: v.pod }),
        {
          body: { metadata: { annotations: { [RESTART_ANNOTATION]: token } } },
          contentType: 'application/merge-patch+json',
        },
      );
    };
    const pending = replicas.filter((v) => v.obs?.pendingRestart);
    if (pending.length) {
      await request(pending[0]!);
      return undefined;
    }
    if (!primary.obs?.pendingRestart) return undefined;
    if (replicas.length === 0) {
      await request(primary);
      return undefined;
    }
    const plan = planFailover(replicas, replicas.length, 0);
    if (plan.kind !== 'promote') return undefined;
    const updated = await this.#casAnnotations(cluster, { [PRIMARY_ANNOTATION]: plan.target });
    const record = {
      time: this.#now().toISOString(),
      from: designated,
      to: plan.target,
      reason: 'switchover to apply settings that need a restart (the former primary restarts as it rejoins)',
    };
    log.info(record, 'switchover');
    return { cluster: updated, record };
  }

  async #promote(
    cluster: PostgresCluster & KubeObject,
    target: InstanceView,
    access: InstanceAccess,
    log: Logger,
    views: readonly InstanceView[],
  ): Promise<Problem | undefined> {
    const others = otherPrimaries(views, target.pod);
    if (others.length)
      return {
        reason: 'WaitingForOldPrimary',
        message: `${others.join(', ')} still answer as primary; ${target.pod} is promoted once they have stopped`,
      };
    try {
      if (!(await promote(target.ip!, access)))
        return { reason: 'PromotionPending', message: `${target.pod} has not finished promotion yet` };
      log.info({ instance: target.pod, cluster: cluster.metadata.name }, 'promoted');
      return undefined;
    } catch (e) {
      return { reason: 'PromotionFailed', message: `promoting ${target.pod}: ${describeError(e)}` };
    }
  }

  /** Merge patch of the cluster's annotations with its resourceVersion as precondition (409 when it moved). */
  async #casAnnotations(
    cluster: PostgresCluster & KubeObject,
    annotations: Record<string, string | null>,
  ): Promise<PostgresCluster & KubeObject> {
    try {
      const updated = await this.opts.client.request<PostgresCluster & KubeObject>(
        'PATCH',
        objectPath(clusterType, { namespace: cluster.metadata.namespace!, name: cluster.metadata.name }),
        {
          body: { metadata: { resourceVersion: cluster.metadata.resourceVersion, annotations } },
          contentType: 'application/merge-patch+json',
        },
      );
      // The new metadata; the spec this reconcile acts on (it may hold a scale-down back).
      return { ...updated, spec: cluster.spec };
    } catch (e) {
      if (isConflict(e))
        throw new Error('the PostgresCluster changed while deciding roles; retrying from a fresh read');
      throw e;
    }
  }

  async #patchPods(
    cluster: PostgresCluster & KubeObject,
    views: readonly InstanceView[],
    designated: string | undefined,
    fenced: ReadonlySet<string>,
    bootstrap?: string,
  ): Promise<void> {
    for (const { pod, patch } of podPatches(views, designated, fenced, bootstrap)) {
      await this.opts.client
        .request('PATCH', objectPath(podType, { namespace: cluster.metadata.namespace!, name: pod }), {
          body: patch,
          contentType: 'application/merge-patch+json',
        })
        .catch((e: unknown) => {
          if ((e as { code?: number }).code !== 404) throw e;
        });
    }
  }

  /** The cluster's pods and what each instance says over SQL. */
  async #observe(cluster: PostgresCluster, access: InstanceAccess): Promise<InstanceView[]> {
    const name = cluster.metadata.name;
    const list = await this.opts.client.list<Pod>(podType, {
      namespace: cluster.metadata.namespace!,
      labelSelector: Object.entries(selectorLabels(name))
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
    });
    const sts = namesOf(name).statefulSet;
    const pods = list.items.filter((p) =>
      new RegExp(`^${sts.replaceAll('.', '\\.')}-\\d+$`).test(p.metadata.name ?? ''),
    );
    const views = await Promise.all(
      pods.map(async (p): Promise<InstanceView> => {
        const ip = p.status?.podIP || undefined;
        const ready =
          !p.metadata.deletionTimestamp &&
          (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
        const statuses = (p.status as { containerStatuses?: { state?: { running?: unknown } }[] } | undefined)
          ?.containerStatuses;
        return {
          pod: p.metadata.name!,
          ordinal: ordinalOf(p.metadata.name!),
          ...(ip ? { ip } : {}),
          ready,
          running: !!statuses?.length && statuses.every((s) => s.state?.running !== undefined),
          labels: p.metadata.labels ?? {},
          annotations: p.metadata.annotations ?? {},
          ...(ip ? { obs: await observeInstance(ip, access) } : {}),
        };
      }),
    );
    return views.sort((a, b) => a.ordinal - b.ordinal);
  }

  /** Passwords: from the referenced Secrets, or the generated ones (made once, then kept). */
  async #passwords(
    cluster: PostgresCluster,
  ): Promise<
    | { superuser: string; generated: { superuserPassword?: string; appPassword?: string } }
    | { problem: Problem }
  > {
    const ns = cluster.metadata.namespace!;
    const read = async (ref: { name: string; key: string }) => {
      const s = await this.opts.client.get<KubeObject & { data?: Record<string, string> }>(secretType, {
        namespace: ns,
        name: ref.name,
      });
      const v = s?.data?.[ref.key];
      return v !== undefined ? Buffer.from(v, 'base64').toString('utf8') : undefined;
    };
    const generated: { superuserPassword?: string; appPassword?: string } = {};
    const one = async (ref: { name: string; key: string }, userGiven: boolean, field: string) => {
      const value = await read(ref);
      if (userGiven) {
        if (!value)
          return {
            problem: {
              reason: 'SecretNotFound',
              message: `Secret ${ns}/${ref.name} with key "${ref.key}" (spec.${field}) does not exist or is empty`,
            },
          };
        return { value };
      }
      if (ref.key !== PASSWORD_KEY) throw new Error('unreachable');
      return { value: value || randomBytes(24).toString('base64url'), generate: true };
    };
    const su = await one(
      superuserPasswordRef(cluster),
      !!cluster.spec.superuserSecretRef,
      'superuserSecretRef',
    );
    if ('problem' in su) return su as { problem: Problem };
    const app = await one(appPasswordRef(cluster), !!cluster.spec.appSecretRef, 'appSecretRef');
    if ('problem' in app) return app as { problem: Problem };
    if ('generate' in su) generated.superuserPassword = su.value;
    if ('generate' in app) generated.appPassword = app.value;
    return { superuser: su.value, generated };
  }

  async #writeStatus(
    cluster: PostgresCluster,
    input: {
      views: readonly InstanceView[];
      designated?: string | undefined;
      fenced?: ReadonlySet<string>;
      currentPrimary?: string | undefined;
      lastFailover?: PostgresClusterStatus['lastFailover'];
      invalid?: Problem;
      blocked?: Problem;
      failover?: Problem;
    },
  ): Promise<PostgresClusterStatus> {
    const status = computeStatus({
      cluster,
      views: input.views,
      designated: input.designated,
      fenced: input.fenced ?? new Set(),
      currentPrimary: input.currentPrimary ?? cluster.status?.currentPrimary,
      ...((input.lastFailover ?? cluster.status?.lastFailover)
        ? { lastFailover: input.lastFailover ?? cluster.status?.lastFailover }
        : {}),
      ...(input.invalid ? { invalid: input.invalid } : {}),
      ...(input.blocked ? { blocked: input.blocked } : {}),
      ...(input.failover ? { failover: input.failover } : {}),
      now: this.#now(),
    });
    await this.opts.applier.applyStatus({
      apiVersion: cluster.apiVersion,
      kind: cluster.kind,
      metadata: { name: cluster.metadata.name, namespace: cluster.metadata.namespace },
      status,
    });
    return status;
  }
}
