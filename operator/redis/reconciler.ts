import { randomBytes } from 'node:crypto';
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type V1Pod,
} from '@kubernetes/client-node';
import { pino } from 'pino';
import type { Logger } from '../../common/logger.js';
import type { RedisCluster } from '../../common/resources/types.gen.js';
import type { Applier, ObjectKey, ReconcileResult, Reconciler } from '../runtime/types.js';
import {
  BUS_PORT,
  childList,
  desiredChildren,
  labelSelector,
  namesOf,
  PASSWORD_KEY,
  passwordRef,
  podsLostByScaleIn,
  REDIS_PORT,
  selectorLabels,
  totalNodes,
  validateSpec,
} from './desired.js';
import { describeAction, execute, type NodeAccess, observePod } from './nodes.js';
import { computeStatus, type Problem } from './status.js';
import { type Memory, type PodView, plan } from './topology.js';

export interface RedisClusterReconcilerOptions {
  /** Reads (the RedisCluster, its Secret, its Pods) go through this. */
  readonly kubeConfig: KubeConfig;
  /** Writes (children and status) go through server-side apply. */
  readonly applier: Applier;
  readonly log?: Logger;
  readonly now?: () => Date;
  /** Come back this soon while the cluster converges (default 2000 ms). */
  readonly convergingRequeueMs?: number;
  /** And this soon when all is well, to notice Redis-level trouble (default 15000 ms). */
  readonly healthyRequeueMs?: number;
  /** And this soon when blocked on something outside the cluster, e.g. a missing Secret (default 10000 ms). */
  readonly blockedRequeueMs?: number;
}

const group = 'nox.dev';
const version = 'v1alpha1';
const plural = 'redisclusters';

/**
 * RedisCluster: Secret (password, generated once and kept), ConfigMap (redis.conf), headless
 * and client Services, StatefulSet and PodDisruptionBudget, applied with server-side apply;
 * then the Redis Cluster topology is formed and healed over the Redis protocol (topology.ts)
 * and the status written (status.ts).
 */
export class RedisClusterReconciler implements Reconciler {
  readonly kind = 'RedisCluster';
  readonly #core: CoreV1Api;
  readonly #custom: CustomObjectsApi;
  readonly #log: Logger;
  readonly #now: () => Date;

  constructor(private readonly opts: RedisClusterReconcilerOptions) {
    this.#core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.#custom = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    this.#log = opts.log ?? pino({ level: 'silent' });
    this.#now = opts.now ?? (() => new Date());
  }

  async reconcile(key: ObjectKey): Promise<ReconcileResult> {
    const cluster = await this.#read(key);
    if (!cluster || (cluster.metadata as { deletionTimestamp?: string }).deletionTimestamp)
      return { kind: 'done' }; // children go by owner references
    const log = this.#log.child({ redisCluster: `${key.namespace}/${key.name}` });
    const spec = cluster.spec;
    const shape = { masters: spec.masters, replicasPerMaster: spec.replicasPerMaster };
    const totalPods = totalNodes(spec);

    const problems = validateSpec(spec);
    if (problems.length) {
      const invalid = { reason: 'InvalidSpec', message: problems.join('; ') };
      await this.#writeStatus(cluster, { pods: [], memory: {}, shape, totalPods, invalid });
      return { kind: 'terminal', ...invalid };
    }

    const blockedMs = this.opts.blockedRequeueMs ?? 10_000;
    const password = await this.#password(cluster);
    if ('problem' in password) {
      await this.#writeStatus(cluster, { pods: [], memory: {}, shape, totalPods, blocked: password.problem });
      return { kind: 'requeue', afterMs: blockedMs };
    }

    const lost = podsLostByScaleIn(cluster);
    if (lost.length) {
      const blocked = {
        reason: 'ScaleInBlocked',
        message: `${lost.join(', ')} serve hash slots and would be removed by masters=${spec.masters}, replicasPerMaster=${spec.replicasPerMaster}; moving slots off before a scale-in is not supported, so the StatefulSet keeps its size (restore the previous spec)`,
      };
      log.warn({ pods: lost }, 'scale-in refused');
      // The status keeps describing the nodes as they are: it is what this check reads next time.
      const access: NodeAccess = { password: password.value, port: REDIS_PORT };
      const views = await Promise.all((await this.#pods(cluster)).map((p) => observePod(p, access)));
      await this.#writeStatus(cluster, { pods: views, memory: memoryOf(cluster), shape, totalPods, blocked });
      return { kind: 'requeue', afterMs: blockedMs };
    }
    const children = desiredChildren(
      cluster,
      password.generated ? { generatedPassword: password.value } : {},
    );
    try {
      for (const child of childList(children)) await this.opts.applier.apply(child);
    } catch (e) {
      const blocked = { reason: 'ApplyFailed', message: describeError(e) };
      log.warn({ err: blocked.message }, 'applying children failed');
      await this.#writeStatus(cluster, { pods: [], memory: {}, shape, totalPods, blocked }).catch(() => {});
      return { kind: 'error', error: e };
    }

    const access: NodeAccess = { password: password.value, port: REDIS_PORT };
    const pods = await this.#pods(cluster);
    const views = await Promise.all(pods.map((p) => observePod(p, access)));
    const memory = memoryOf(cluster);
    const p = plan(views, shape, memory, { port: REDIS_PORT, busPort: BUS_PORT, totalPods });
    if (p.actions.length) {
      const ipOf = (pod: string) => views.find((v) => v.pod === pod)?.ip;
      const result = await execute(p.actions, ipOf, access);
      for (const a of result.done) log.info({ action: describeAction(a) }, 'topology');
      for (const f of result.failed)
        log.warn({ action: describeAction(f.action), err: f.error }, 'topology command failed');
    } else if (p.waiting) {
      log.debug({ waiting: p.waiting }, 'topology');
    }

    const status = await this.#writeStatus(cluster, { pods: views, memory, shape, totalPods, plan: p });
    const ready = status.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
    return {
      kind: 'requeue',
      afterMs:
        ready && p.actions.length === 0
          ? (this.opts.healthyRequeueMs ?? 15_000)
          : (this.opts.convergingRequeueMs ?? 2000),
    };
  }

  async #read(key: ObjectKey): Promise<RedisCluster | undefined> {
    try {
      return (await this.#custom.getNamespacedCustomObject({
        group,
        version,
        plural,
        namespace: key.namespace,
        name: key.name,
      })) as RedisCluster;
    } catch (e) {
      if (e instanceof ApiException && e.code === 404) return undefined;
      throw e;
    }
  }

  /** The password: from spec.passwordSecretRef, or the generated Secret's (made on first use, then kept). */
  async #password(
    cluster: RedisCluster,
  ): Promise<{ value: string; generated: boolean } | { problem: Problem }> {
    const ns = cluster.metadata.namespace!;
    const ref = passwordRef(cluster);
    const secret = await this.#core
      .readNamespacedSecret({ name: ref.name, namespace: ns })
      .catch((e: unknown) => {
        if (e instanceof ApiException && e.code === 404) return undefined;
        throw e;
      });
    const stored = secret?.data?.[ref.key];
    const value = stored !== undefined ? Buffer.from(stored, 'base64').toString('utf8') : undefined;
    if (cluster.spec.passwordSecretRef) {
      if (!value)
        return {
          problem: {
            reason: 'PasswordSecretNotFound',
            message: `Secret ${ns}/${ref.name} with key "${ref.key}" (spec.passwordSecretRef) does not exist or is empty`,
          },
        };
      return { value, generated: false };
    }
    if (ref.key !== PASSWORD_KEY) throw new Error('unreachable');
    return { value: value || randomBytes(24).toString('base64url'), generated: true };
  }

  async #pods(cluster: RedisCluster): Promise<Omit<PodView, 'redis' | 'error'>[]> {
    const name = cluster.metadata.name!;
    const sts = namesOf(name).statefulSet;
    const list = await this.#core.listNamespacedPod({
      namespace: cluster.metadata.namespace!,
      labelSelector: labelSelector(selectorLabels(name)),
    });
    const ordinalRe = new RegExp(`^${sts.replace(/[.]/g, '\\.')}-(\\d+)$`);
    return list.items.flatMap((pod: V1Pod) => {
      const m = ordinalRe.exec(pod.metadata?.name ?? '');
      if (!m) return [];
      const ready =
        !pod.metadata?.deletionTimestamp &&
        (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
      return [
        {
          pod: pod.metadata!.name!,
          ordinal: Number(m[1]),
          ip: pod.status?.podIP || undefined,
          ready,
          k8sNode: pod.spec?.nodeName || undefined,
        },
      ];
    });
  }

  async #writeStatus(
    cluster: RedisCluster,
    input: Omit<Parameters<typeof computeStatus>[0], 'cluster' | 'now' | 'port'>,
  ) {
    const status = computeStatus({ ...input, cluster, now: this.#now(), port: REDIS_PORT });
    await this.opts.applier.applyStatus({
      apiVersion: cluster.apiVersion,
      kind: cluster.kind,
      metadata: { name: cluster.metadata.name, namespace: cluster.metadata.namespace },
      status,
    });
    return status;
  }
}

/** Pod name → Redis node id, as the last status recorded them. */
function memoryOf(cluster: RedisCluster): Memory {
  return Object.fromEntries(
    (cluster.status?.nodes ?? []).filter((n) => n.pod && n.id).map((n) => [n.pod!, n.id!]),
  );
}

function describeError(e: unknown): string {
  if (e instanceof ApiException) {
    const body = e.body as { message?: string } | string | undefined;
    const msg = typeof body === 'object' && body?.message ? body.message : '';
    return `HTTP ${e.code}${msg ? `: ${msg}` : ''}`;
  }
  return e instanceof Error ? e.message : String(e);
}
