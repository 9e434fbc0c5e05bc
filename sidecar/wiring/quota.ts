import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import type { Revocations } from '../identity/revocations.js';
import { DenyCachingStore } from '../quota/denyCache.js';
import { MemoryQuotaStore } from '../quota/memoryStore.js';
import type { QuotaStore } from '../quota/store.js';
import type { Settings } from '../settings/settings.js';
import type { RedisTargets } from './redis.js';

/** The store the settings ask for, behind the local deny cache. */
export async function quotaStoreFor(
  settings: Settings,
  redis: RedisTargets,
  log: Logger,
  registry: Registry,
): Promise<QuotaStore> {
  if (settings.quotaStore === 'memory') {
    return new DenyCachingStore(
      new MemoryQuotaStore({ maxEntries: settings.quotaMemoryMaxEntries, registry }),
      registry,
    );
  }
  // ioredis is loaded only when a Redis store is configured (~20 MB resident).
  const { RedisQuotaStore } = await import('../quota/redisStore.js');
  const store = new RedisQuotaStore({
    ...redis('NOX_QUOTA_STORE', settings.quotaStore),
    timeoutMs: settings.redisTimeoutMs,
    waitReplicas: settings.redisWaitReplicas,
    waitTimeoutMs: settings.redisWaitTimeoutMs,
    log,
    registry,
  });
  await store.ready();
  return new DenyCachingStore(store, registry);
}

/** Revocations travel through the same Redis as quotas; without Redis they stay in this process. */
export async function revocationsFor(
  settings: Settings,
  redis: RedisTargets,
  log: Logger,
  registry: Registry,
): Promise<Revocations> {
  if (settings.quotaStore === 'memory')
    return new (await import('../identity/memoryRevocations.js')).MemoryRevocations();
  const { RedisRevocations } = await import('../identity/revocations.js');
  const { nodes, cluster, password } = redis('NOX_QUOTA_STORE', settings.quotaStore);
  return new RedisRevocations(nodes, cluster, password, log, registry);
}
