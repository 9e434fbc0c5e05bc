import type { Problem } from './reasons.js';
import { type Condition, setCondition } from './runtime/conditions.js';

/**
 * The three conditions both data-cluster kinds (RedisCluster, PostgresCluster) report, from
 * what their status functions found: a pure function.
 *
 * - Accepted: the spec can work as written (False: InvalidSpec, with what to change).
 * - Ready: nothing is in the way (False: the first problem found).
 * - Degraded: the cluster was formed once and is not Ready now (True: the same problem).
 *   Ready=False/Degraded=False means it is still being formed.
 *
 * Each condition carries observedGeneration; its lastTransitionTime moves only when its
 * status does (setCondition).
 */
export interface ClusterConditionsInput {
  readonly previous: readonly Condition[] | undefined;
  readonly generation: number | undefined;
  readonly now: Date;
  /** A spec the operator refuses. */
  readonly invalid?: Problem | undefined;
  /** The first thing in the way of Ready; none: healthy. */
  readonly problem?: Problem | undefined;
  /** Whether the cluster has been formed (has had a primary, or a Redis cluster): only then can it be degraded. */
  readonly formed: boolean;
  /** The message of Accepted=True. */
  readonly validMessage: string;
  /** Ready=True. */
  readonly healthy: Problem;
  /** Degraded=False when healthy (default: `healthy`). */
  readonly healthyDegraded?: Problem;
  /** Degraded=False while the cluster has not been formed. */
  readonly notFormed: Problem;
  /** Degraded=False while the spec is refused. */
  readonly notInForce: Problem;
}

export function clusterConditions(input: ClusterConditionsInput): Condition[] {
  const { invalid, problem, now } = input;
  const gen = input.generation !== undefined ? { observedGeneration: input.generation } : {};
  const set = (list: readonly Condition[] | undefined, type: string, ok: boolean, p: Problem) =>
    setCondition(list, { type, status: ok ? 'True' : 'False', ...p, ...gen }, now);

  let conditions = invalid
    ? set(input.previous, 'Accepted', false, invalid)
    : set(input.previous, 'Accepted', true, { reason: 'Valid', message: input.validMessage });
  const blocker = invalid ?? problem;
  conditions = blocker
    ? set(conditions, 'Ready', false, blocker)
    : set(conditions, 'Ready', true, input.healthy);
  conditions = invalid
    ? set(conditions, 'Degraded', false, input.notInForce)
    : problem
      ? input.formed
        ? set(conditions, 'Degraded', true, problem)
        : set(conditions, 'Degraded', false, input.notFormed)
      : set(conditions, 'Degraded', false, input.healthyDegraded ?? input.healthy);
  return conditions;
}
