import { readFileSync } from 'node:fs';
import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import type { Revocations } from '../identity/revocations.js';
import type { Settings } from '../settings/settings.js';
import { DenyCachingStore } from './denyCache.js';
import { MemoryQuotaStore } from './memoryStore.js';
import type { QuotaStore } from './store.js';

export function parseNodes(spec: string): { host: string; port: number }[] {
  return spec
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => {
      const i = s.lastIndexOf(':');
      const port = Number(s.slice(i + 1));
      if (i <= 0 || !Number.isInteger(port)) throw new Error(`NOX_REDIS_NODES: "${s}" is not host:port`);
      return { host: s.slice(0, i), port };
    });
}

/** The store the settings ask for, behind the local deny cache. */
export async function quotaStoreFor(
  settings: Settings,
  log: Logger,
  registry: Registry,
): Promise<QuotaStore> {
  if (settings.quotaStore === 'memory') return new DenyCachingStore(new MemoryQuotaStore(), registry);
  const nodes = parseNodes(settings.redisNodes);
  if (nodes.length === 0) throw new Error(`NOX_QUOTA_STORE=${settings.quotaStore} needs NOX_REDIS_NODES`);
  // ioredis is loaded only when a Redis store is configured (~20 MB resident).
  const { RedisQuotaStore } = await import('./redisStore.js');
  const password = settings.redisPasswordFile
    ? readFileSync(settings.redisPasswordFile, 'utf8').trim()
    : undefined;
  const store = new RedisQuotaStore({
    nodes,
    cluster: settings.quotaStore === 'redis-cluster',
    ...(password ? { password } : {}),
    timeoutMs: settings.redisTimeoutMs,
    waitReplicas: settings.redisWaitReplicas,
    log,
    registry,
  });
  await store.ready();
  return new DenyCachingStore(store, registry);
}

/** Revocations travel through the same Redis as quotas; without Redis they stay in this process. */
export async function revocationsFor(
  settings: Settings,
  log: Logger,
  registry: Registry,
): Promise<Revocations> {
  if (settings.quotaStore === 'memory')
    return new (await import('../identity/memoryRevocations.js')).MemoryRevocations();
  const { RedisRevocations } = await import('../identity/revocations.js');
  const password = settings.redisPasswordFile
    ? readFileSync(settings.redisPasswordFile, 'utf8').trim()
    : undefined;
  return new RedisRevocations(
    parseNodes(settings.redisNodes),
    settings.quotaStore === 'redis-cluster',
    password,
    log,
    registry,
  );
}
