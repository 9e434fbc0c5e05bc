import { Cluster, type ClusterNode, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';

/**
 * The sidecar's Redis, as its settings name it (sidecar/wiring/redis.ts reads them once):
 * quotas, sessions and revocations all connect to it through `connectRedis`.
 */
export interface RedisTarget {
  /** One node: a plain Redis. Several, or `cluster: true`: a Redis Cluster. */
  readonly nodes: readonly { host: string; port: number }[];
  readonly cluster: boolean;
  readonly password?: string;
}

export type RedisClient = Redis | Cluster;

/**
 * A connection to the target. Each user says how its commands behave (timeouts, offline
 * queue, retries) in `options`, and, for a Redis Cluster, how the slot map is followed in
 * `clusterOptions`: what suits a quota check in the hot path does not suit a subscriber.
 */
export function connectRedis(
  target: RedisTarget,
  options: RedisOptions,
  clusterOptions: Omit<ClusterOptions, 'redisOptions'> = {},
): RedisClient {
  const redisOptions: RedisOptions = target.password ? { password: target.password, ...options } : options;
  if (!target.cluster) return new Redis({ ...target.nodes[0]!, ...redisOptions });
  return new Cluster(target.nodes as ClusterNode[], { ...clusterOptions, redisOptions });
}
