import type { RedisCluster, RedisClusterStatus } from '../../common/resources/types.gen.js';
import { clusterConditions } from '../clusterStatus.js';
import type { Problem } from '../reasons.js';
import type { Condition } from '../runtime/conditions.js';
import {
  analyse,
  balance,
  CLUSTER_SLOTS,
  formatSlots,
  isHealthy,
  isLive,
  type Memory,
  type NodeEntry,
  type Plan,
  type PodView,
  type Shape,
  slotCount,
} from './topology.js';

/**
 * The RedisCluster's status from what the reconciler observed: a pure function.
 *
 * Conditions (clusterStatus.ts):
 * - Accepted: the spec can work as written (False: InvalidSpec, with what to change).
 * - Ready: every pod is ready and in the cluster, all 16384 slots are served by healthy
 *   masters, `masters` slot owners each with `replicasPerMaster` replicas.
 * - Degraded: the cluster was formed but is not Ready now (a node down, slots uncovered,
 *   a replica missing, ...). Ready=False/Degraded=False means it is still being formed.
 * Ready and Degraded carry the same reason while degraded: the first problem found.
 */

type NodeStatus = NonNullable<RedisClusterStatus['nodes']>[number];

export type { Problem };

export interface StatusInput {
  readonly cluster: RedisCluster;
  readonly pods: readonly PodView[];
  readonly memory: Memory;
  readonly shape: Shape;
  readonly totalPods: number;
  readonly port: number;
  readonly plan?: Plan;
  /** A spec the operator refuses (Accepted=False). */
  readonly invalid?: Problem;
  /** Something outside the cluster's topology blocks progress (a missing Secret, an apply error). */
  readonly blocked?: Problem;
  readonly now: Date;
}

export interface Health {
  readonly formed: boolean;
  readonly readyNodes: number;
  readonly slotsCovered: number;
  readonly nodes: NodeStatus[];
  /** Empty when healthy. */
  readonly problems: Problem[];
}

export function health(input: Omit<StatusInput, 'cluster' | 'now' | 'invalid' | 'blocked'>): Health {
  const { pods, memory, shape, totalPods, port } = input;
  const a = analyse(pods, memory);
  const liveIds = new Set(a.live.map((p) => p.redis.self.id));

  const entryOf = (p: PodView): NodeEntry | undefined => {
    const id = a.idOfPod.get(p.pod);
    if (id === undefined) return undefined;
    return a.view.get(id) ?? (isLive(p) ? p.redis.self : undefined);
  };
  const nodes: NodeStatus[] = [...pods]
    .sort((x, y) => x.ordinal - y.ordinal)
    .map((p) => {
      const e = entryOf(p);
      const ip = p.ip ?? e?.ip;
      return {
        pod: p.pod,
        ...(ip ? { address: `${ip}:${port}` } : {}),
        ...(e ? { id: e.id } : {}),
        role: e ? e.role : 'unknown',
        ...(e?.masterId ? { masterId: e.masterId } : {}),
        ...(e?.slots.length ? { slots: formatSlots(e.slots) } : {}),
      };
    });

  const servingOwners = a.owners.filter((o) => isHealthy(o) && liveIds.has(o.id));
  const slotsCovered = servingOwners.reduce((n, o) => n + slotCount(o.slots), 0);
  const readyNodes = a.joined.size;

  const problems: Problem[] = [];
  const live = a.live.length;
  if (pods.length < totalPods || live < totalPods) {
    const down = [...pods]
      .filter((p) => !isLive(p))
      .map((p) => p.pod)
      .sort();
    problems.push({
      reason: 'NodesNotReady',
      message: `${live} of ${totalPods} pods ready${down.length ? ` (not ready: ${down.join(', ')})` : ''}`,
    });
  }
  if (a.formed) {
    if (slotsCovered < CLUSTER_SLOTS)
      problems.push({
        reason: 'SlotsNotCovered',
        message: `${slotsCovered} of ${CLUSTER_SLOTS} hash slots served by a healthy master`,
      });
    const notJoined = a.live.filter((p) => !a.joined.has(p.pod)).map((p) => p.pod);
    if (notJoined.length)
      problems.push({ reason: 'NodesJoining', message: `not in the cluster yet: ${notJoined.join(', ')}` });
    if (a.ghosts.length)
      problems.push({
        reason: 'NodesLeaving',
        message: `forgetting ${a.ghosts.length} node(s) whose pods are gone`,
      });
    const failing = [...a.view.values()].filter((e) => !isHealthy(e) && !e.flags.includes('handshake'));
    if (failing.length && live === totalPods)
      problems.push({
        reason: 'NodesFailing',
        message: `nodes marked failing: ${failing.map((e) => a.podOfId.get(e.id) ?? e.id.slice(0, 8)).join(', ')}`,
      });
    if (a.owners.length !== shape.masters)
      problems.push({
        reason: 'MastersMismatch',
        message: `${a.owners.length} masters own slots, ${shape.masters} declared`,
      });
    const migrating = a.live.some((p) => p.redis.self.migrating?.length || p.redis.self.importing?.length);
    if (migrating || (a.owners.length === shape.masters && balance(a, [], shape.masters).length > 0))
      problems.push({
        reason: 'Rebalancing',
        message: `moving hash slots so that each of the ${shape.masters} masters serves an even share (now ${a.owners
          .map((o) => slotCount(o.slots))
          .join(', ')})`,
      });
    const short = a.owners.filter(
      (o) =>
        [...a.view.values()].filter((e) => e.role === 'replica' && e.masterId === o.id && isHealthy(e))
          .length < shape.replicasPerMaster,
    );
    if (short.length)
      problems.push({
        reason: 'ReplicasMissing',
        message: `masters with fewer than ${shape.replicasPerMaster} healthy replicas: ${short
          .map((o) => a.podOfId.get(o.id) ?? o.id.slice(0, 8))
          .join(', ')}`,
      });
    if (a.anchor && !a.anchor.redis.clusterStateOk)
      problems.push({ reason: 'ClusterStateFail', message: `${a.anchor.pod} reports cluster_state:fail` });
  } else if (problems.length === 0) {
    problems.push({ reason: 'Forming', message: input.plan?.waiting ?? 'forming the cluster' });
  }
  const unreachable = pods.filter((p) => p.ready && p.error);
  if (unreachable.length)
    problems.push({
      reason: 'NodesUnreachable',
      message: unreachable.map((p) => `${p.pod}: ${p.error}`).join('; '),
    });
  return { formed: a.formed, readyNodes, slotsCovered, nodes, problems };
}

export function computeStatus(input: StatusInput): RedisClusterStatus {
  const { cluster, now } = input;
  const generation = cluster.metadata.generation;
  const gen = generation !== undefined ? { observedGeneration: generation } : {};
  const common = {
    previous: cluster.status?.conditions as Condition[] | undefined,
    generation,
    now,
    validMessage: 'the spec is valid',
    notInForce: { reason: 'InvalidSpec', message: 'the spec is not in force' },
  } as const;

  if (input.invalid) {
    return {
      ...gen,
      readyNodes: cluster.status?.readyNodes ?? 0,
      slotsCovered: cluster.status?.slotsCovered ?? 0,
      nodes: cluster.status?.nodes ?? [],
      conditions: clusterConditions({
        ...common,
        invalid: input.invalid,
        formed: false,
        healthy: input.invalid,
        notFormed: input.invalid,
      }) as never,
    };
  }
  const h = health(input);
  const problems = input.blocked ? [input.blocked, ...h.problems] : h.problems;
  const first = problems[0];
  return {
    ...gen,
    readyNodes: h.readyNodes,
    slotsCovered: h.slotsCovered,
    nodes: h.nodes,
    conditions: clusterConditions({
      ...common,
      problem: first,
      formed: h.formed,
      healthy: {
        reason: 'ClusterHealthy',
        message: `${h.readyNodes} nodes, ${input.shape.masters} masters with ${input.shape.replicasPerMaster} replica(s) each, all ${CLUSTER_SLOTS} slots served`,
      },
      notFormed: { reason: 'Forming', message: first?.message ?? 'forming the cluster' },
    }) as never,
  };
}
