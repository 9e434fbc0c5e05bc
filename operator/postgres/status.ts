import type { PostgresCluster, PostgresClusterStatus } from '../../common/resources/types.gen.js';
import { clusterConditions } from '../clusterStatus.js';
import type { Problem } from '../reasons.js';
import type { Condition } from '../runtime/conditions.js';
import { lagBytes } from './failoverRules.js';
import { desiredRole, type InstanceView, isHealthyPrimary, isStreamingReplica } from './roles.js';

/**
 * The PostgresCluster's status from what the reconciler observed: a pure function.
 *
 * Conditions (clusterStatus.ts):
 * - Accepted: the spec can work as written (False: InvalidSpec, with what to change).
 * - Ready: the primary accepts writes and every other instance streams from it.
 * - Degraded: the cluster has had a primary, but now the primary is lost (a failover is
 *   pending or running) or an instance is fenced, down or not streaming.
 * Ready=False/Degraded=False means the cluster is still being bootstrapped.
 */

type Instance = NonNullable<PostgresClusterStatus['instances']>[number];

export type { Problem };

export interface StatusInput {
  readonly cluster: PostgresCluster;
  readonly views: readonly InstanceView[];
  readonly designated: string | undefined;
  readonly fenced: ReadonlySet<string>;
  /** The primary observed healthy before (status.currentPrimary as it will be written). */
  readonly currentPrimary: string | undefined;
  readonly lastFailover?: PostgresClusterStatus['lastFailover'];
  readonly invalid?: Problem;
  readonly blocked?: Problem;
  /** A failover in progress or pending, with why. */
  readonly failover?: Problem;
  readonly now: Date;
}

export function computeStatus(input: StatusInput): PostgresClusterStatus {
  const { cluster, views, designated, fenced, now } = input;
  const generation = cluster.metadata.generation;
  const gen = generation !== undefined ? { observedGeneration: generation } : {};
  const primary = views.find((v) => v.pod === designated);
  const primaryLsn = primary?.obs?.currentLsn;
  const instances: Instance[] = views.map((v) => {
    const role = v.obs?.reachable
      ? v.obs.inRecovery
        ? 'replica'
        : 'primary'
      : fenced.has(v.pod)
        ? 'fenced'
        : 'unknown';
    const lag = v.obs?.inRecovery ? lagBytes(primaryLsn, v.obs.receivedLsn) : undefined;
    return {
      pod: v.pod,
      role: fenced.has(v.pod) && role !== 'primary' ? 'fenced' : role,
      ready: v.ready,
      ...(v.obs?.receivedLsn ? { receivedLsn: v.obs.receivedLsn } : {}),
      ...(v.obs?.replayedLsn ? { replayedLsn: v.obs.replayedLsn } : {}),
      ...(lag !== undefined ? { lagBytes: lag } : {}),
      ...(v.obs?.pendingRestart ? { pendingRestart: true } : {}),
    };
  });

  const healthy = primary && isHealthyPrimary(primary) ? primary.obs : undefined;
  const timeline = healthy?.timeline ?? cluster.status?.timeline;
  const synchronousStandbyNames = healthy?.syncStandbyNames ?? cluster.status?.synchronousStandbyNames;

  const problems = readinessProblems(input);
  const conditions = clusterConditions({
    previous: cluster.status?.conditions as Condition[] | undefined,
    generation,
    now,
    invalid: input.invalid,
    problem: input.blocked ?? problems[0],
    formed: input.currentPrimary !== undefined,
    validMessage: 'the spec can be run as written',
    healthy: {
      reason: 'Healthy',
      message: `primary ${designated} accepts writes; ${views.length - 1} replicas stream from it`,
    },
    healthyDegraded: { reason: 'Healthy', message: 'all instances healthy' },
    notFormed: { reason: 'NotFormed', message: 'the cluster has not had a primary yet' },
    notInForce: { reason: 'NotFormed', message: 'the cluster has not had a primary yet' },
  });
  return {
    ...gen,
    ...(input.currentPrimary ? { currentPrimary: input.currentPrimary } : {}),
    // What the failover relies on is kept while the primary is lost (promotion.ts reads it).
    ...(timeline !== undefined ? { timeline } : {}),
    ...(synchronousStandbyNames !== undefined ? { synchronousStandbyNames } : {}),
    instances,
    ...(input.lastFailover ? { lastFailover: input.lastFailover } : {}),
    // Written by the schema aspect (schema.ts); kept as it was by every other status write.
    ...(cluster.status?.schema ? { schema: cluster.status.schema } : {}),
    conditions: conditions as never,
  };
}

function readinessProblems(input: StatusInput): Problem[] {
  const { views, designated, fenced, cluster } = input;
  const problems: Problem[] = [];
  if (input.failover) problems.push(input.failover);
  const primary = views.find((v) => v.pod === designated);
  if (!designated || !primary)
    problems.push({ reason: 'Bootstrapping', message: 'waiting for the first instance to be created' });
  else if (!isHealthyPrimary(primary))
    problems.push(
      input.currentPrimary === undefined
        ? { reason: 'Bootstrapping', message: `initialising the primary ${designated}` }
        : {
            reason: 'PrimaryUnavailable',
            message: `primary ${designated} does not accept writes (${primary.obs?.error ?? (primary.ready ? 'in recovery' : 'pod not ready')})`,
          },
    );
  if (views.length < cluster.spec.instances)
    problems.push({
      reason: 'InstancesMissing',
      message: `${views.length} of ${cluster.spec.instances} instance pods exist`,
    });
  for (const v of views) {
    if (v.pod === designated) continue;
    const role = desiredRole(v.pod, designated, fenced);
    if (role === 'fenced')
      problems.push({
        reason: 'InstanceFenced',
        message: `${v.pod} is fenced (a former primary); it rejoins as a replica once its pod runs again`,
      });
    else if (!isStreamingReplica(v))
      problems.push({
        reason: 'ReplicaNotStreaming',
        message: `${v.pod} is not streaming from the primary (${v.obs?.error ?? v.obs?.walReceiver ?? (v.ready ? 'no WAL receiver' : 'pod not ready')})`,
      });
  }
  return problems;
}
