import type { Registry } from 'prom-client';
import type { Logger } from '../common/logger.js';
import type { RedisRevocations } from '../sidecar/identity/revocations.js';
import type { RedisSessionStore } from '../sidecar/login/redisSessionStore.js';
import type { QuotaStore } from '../sidecar/quota/store.js';
import { redisTargetsFor } from '../sidecar/wiring/redis.js';
import type { AdminSettings } from './settings.js';

/**
 * The sidecars' Redis, as the admin API reaches it: the very classes the sidecars use
 * (RedisRevocations, RedisSessionStore), so keys, channels and formats have one definition.
 * Each part is absent when its store setting is memory; its routes answer 503 then.
 */
export interface AdminRedis {
  /** Revocations every sidecar applies within a second (NOX_QUOTA_STORE's Redis, as the sidecars). */
  readonly revocations?: RedisRevocations;
  /** Browser sessions (NOX_SESSION_STORE's Redis). */
  readonly sessions?: RedisSessionStore;
  /** The quota counters (NOX_QUOTA_STORE's Redis), read in dry-run mode; never charged. */
  readonly quota?: QuotaStore;
  close(): Promise<void>;
}

/** How long an admin request waits for Redis: not the hot path, so longer than a sidecar does. */
const TIMEOUT_MS = 2000;

export async function connectAdminRedis(
  settings: AdminSettings,
  log: Logger,
  registry: Registry,
): Promise<AdminRedis> {
  if (settings.quotaStore === 'memory' && settings.sessionStore === 'memory')
    return { close: async () => {} };
  const targets = redisTargetsFor(settings);
  const parts: { -readonly [K in keyof AdminRedis]?: AdminRedis[K] } = {};
  // ioredis is loaded only when a Redis is configured, as in the sidecar.
  if (settings.quotaStore !== 'memory') {
    const target = targets('NOX_QUOTA_STORE', settings.quotaStore);
    const [{ RedisRevocations }, { RedisQuotaStore }] = await Promise.all([
      import('../sidecar/identity/revocations.js'),
      import('../sidecar/quota/redisStore.js'),
    ]);
    parts.revocations = new RedisRevocations(target.nodes, target.cluster, target.password, log, registry);
    // The sidecars' own store, only ever asked in dry-run mode (usage.ts): nothing is charged.
    parts.quota = new RedisQuotaStore({ ...target, timeoutMs: TIMEOUT_MS, waitReplicas: 0, log, registry });
  }
  if (settings.sessionStore !== 'memory') {
    const { RedisSessionStore } = await import('../sidecar/login/redisSessionStore.js');
    parts.sessions = new RedisSessionStore({
      ...targets('NOX_SESSION_STORE', settings.sessionStore),
      timeoutMs: TIMEOUT_MS,
      log,
    });
  }
  return {
    ...parts,
    close: async () => {
      await Promise.all([parts.revocations?.stop(), parts.sessions?.close(), parts.quota?.close()]);
    },
  };
}

/** The error a route throws when the Redis it needs is not configured: answered 503 by the server. */
export class NoRedis extends Error {
  constructor(setting: 'NOX_QUOTA_STORE' | 'NOX_SESSION_STORE') {
    super(`this admin API has no Redis for it: ${setting} is memory`);
  }
}
