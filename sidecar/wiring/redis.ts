import { readFileSync } from 'node:fs';
import type { RedisTarget } from '../redis/connect.js';
import type { Settings } from '../settings/settings.js';

/** The Redis a store setting (NOX_QUOTA_STORE, NOX_SESSION_STORE) asks for; throws when no node is set. */
export type RedisTargets = (
  setting: 'NOX_QUOTA_STORE' | 'NOX_SESSION_STORE',
  kind: 'redis' | 'redis-cluster',
) => RedisTarget;

/**
 * The Redis every store of this sidecar connects to: the nodes as the settings parsed
 * them, the password file read here, once (the RedisCluster's Secret, mounted as a file).
 */
export function redisTargetsFor(settings: Pick<Settings, 'redisNodes' | 'redisPasswordFile'>): RedisTargets {
  const password = settings.redisPasswordFile
    ? readFileSync(settings.redisPasswordFile, 'utf8').trim()
    : undefined;
  return (setting, kind) => {
    if (settings.redisNodes.length === 0) throw new Error(`${setting}=${kind} needs NOX_REDIS_NODES`);
    return {
      nodes: settings.redisNodes,
      cluster: kind === 'redis-cluster',
      ...(password ? { password } : {}),
    };
  };
}
