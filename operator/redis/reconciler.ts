import type { KubernetesObject } from '@kubernetes/client-node';
import type { KubeObject } from '../../common/kube/client.js';
import type { Logger } from '../../common/logger.js';
import type { RedisCluster, RedisClusterStatus } from '../../common/resources/types.gen.js';
import {
  ClusterReconciler,
  type ClusterReconcilerOptions,
  clusterPassword,
  type Outcome,
} from '../clusterReconcile.js';
import type { Problem } from '../reasons.js';
import {
  BUS_PORT,
  childList,
  desiredChildren,
  namesOf,
  passwordRef,
  podsLostByScaleIn,
  REDIS_PORT,
  selectorLabels,
  totalNodes,
  validateSpec,
} from './desired.js';
import { describeAction, execute, type NodeAccess, observePod } from './nodes.js';
import { computeStatus } from './status.js';
import { type Memory, type PodView, plan } from './topology.js';

/** Defaults: converging 2000 ms, healthy 15000 ms (Redis-level trouble no pod event shows). */
export type RedisClusterReconcilerOptions = ClusterReconcilerOptions;

type Cluster = RedisCluster & KubeObject;

interface Prepared {
  readonly cluster: Cluster;
  readonly password: string;
  readonly generated: boolean;
  /** A scale-in the operator refuses: nothing is applied, the status reports it. */
  readonly held?: Problem;
}

/**
 * RedisCluster: Secret (password, generated once and kept), ConfigMap (redis.conf), headless
 * and client Services, StatefulSet and PodDisruptionBudget, applied with server-side apply;
 * then the Redis Cluster topology is formed and healed over the Redis protocol (topology.ts)
 * and the status written (status.ts). The sequence is clusterReconcile.ts's.
 */
export class RedisClusterReconciler extends ClusterReconciler<
  Cluster,
  Prepared,
  PodView[],
  RedisClusterStatus
> {
  readonly kind = 'RedisCluster';

  constructor(opts: RedisClusterReconcilerOptions) {
    super(opts, {
      convergingRequeueMs: 2000,
      healthyRequeueMs: 15_000,
      selectorLabels,
      statefulSetOf: (name) => namesOf(name).statefulSet,
    });
  }

  protected validate(cluster: Cluster): string[] {
    return validateSpec(cluster.spec);
  }

  protected async prepare(cluster: Cluster, log: Logger): Promise<Prepared | { problem: Problem }> {
    const password = await clusterPassword(
      this.client,
      cluster.metadata.namespace!,
      passwordRef(cluster),
      cluster.spec.passwordSecretRef
        ? { field: 'passwordSecretRef', reason: 'PasswordSecretNotFound' }
        : undefined,
    );
    if ('problem' in password) return password;
    const prepared = { cluster, password: password.value, generated: password.generated };
    const lost = podsLostByScaleIn(cluster);
    if (!lost.length) return prepared;
    const { masters, replicasPerMaster } = cluster.spec;
    log.warn({ pods: lost }, 'scale-in refused');
    return {
      ...prepared,
      held: {
        reason: 'ScaleInBlocked',
        message: `${lost.join(', ')} serve hash slots and would be removed by masters=${masters}, replicasPerMaster=${replicasPerMaster}; moving slots off before a scale-in is not supported, so the StatefulSet keeps its size (restore the previous spec)`,
      },
    };
  }

  protected children({ cluster, password, generated, held }: Prepared): KubernetesObject[] {
    if (held) return [];
    return childList(desiredChildren(cluster, generated ? { generatedPassword: password } : {}));
  }

  protected async observe({ cluster, password }: Prepared): Promise<PodView[]> {
    const access: NodeAccess = { password, port: REDIS_PORT };
    return Promise.all(
      (await this.pods(cluster)).map((p) =>
        observePod(
          { pod: p.name, ordinal: p.ordinal, ip: p.ip, ready: p.ready, k8sNode: p.nodeName },
          access,
        ),
      ),
    );
  }

  protected async converge(
    { cluster, password, held }: Prepared,
    views: PodView[],
    log: Logger,
  ): Promise<Outcome<RedisClusterStatus>> {
    const memory = memoryOf(cluster);
    // A refused scale-in: the status keeps describing the nodes as they are, which is what
    // the check reads next time; the topology is left alone.
    if (held)
      return {
        status: this.#status(cluster, views, memory, { blocked: held }),
        requeueAfterMs: this.blockedRequeueMs,
      };

    const shape = shapeOf(cluster);
    const access: NodeAccess = { password, port: REDIS_PORT };
    const p = plan(views, shape, memory, {
      port: REDIS_PORT,
      busPort: BUS_PORT,
      totalPods: totalNodes(cluster.spec),
    });
    if (p.actions.length) {
      const ipOf = (pod: string) => views.find((v) => v.pod === pod)?.ip;
      const result = await execute(p.actions, ipOf, access);
      for (const a of result.done) log.info({ action: describeAction(a) }, 'topology');
      for (const f of result.failed)
        log.warn({ action: describeAction(f.action), err: f.error }, 'topology command failed');
    } else if (p.waiting) {
      log.debug({ waiting: p.waiting }, 'topology');
    }
    return { status: this.#status(cluster, views, memory, { plan: p }), settled: p.actions.length === 0 };
  }

  protected statusWithout(
    cluster: Cluster,
    problem: { invalid: Problem } | { blocked: Problem },
  ): RedisClusterStatus {
    return this.#status(cluster, [], {}, problem);
  }

  #status(
    cluster: Cluster,
    pods: readonly PodView[],
    memory: Memory,
    extra: { invalid: Problem } | { blocked: Problem } | { plan: ReturnType<typeof plan> },
  ): RedisClusterStatus {
    return computeStatus({
      cluster,
      pods,
      memory,
      shape: shapeOf(cluster),
      totalPods: totalNodes(cluster.spec),
      port: REDIS_PORT,
      now: this.now(),
      ...extra,
    });
  }
}

function shapeOf(cluster: RedisCluster) {
  return { masters: cluster.spec.masters, replicasPerMaster: cluster.spec.replicasPerMaster };
}

/** Pod name → Redis node id, as the last status recorded them. */
function memoryOf(cluster: RedisCluster): Memory {
  return Object.fromEntries(
    (cluster.status?.nodes ?? []).filter((n) => n.pod && n.id).map((n) => [n.pod!, n.id!]),
  );
}
