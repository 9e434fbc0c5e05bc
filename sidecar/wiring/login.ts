import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { Login } from '../login/login.js';
import { Pages } from '../login/pages.js';
import { SessionMethod } from '../login/sessionMethod.js';
import { MemorySessionStore, type SessionStore } from '../login/sessionStore.js';
import type { SecretStore } from '../secrets/secretStore.js';
import type { Settings } from '../settings/settings.js';
import { LoginStage } from '../stages/login.js';
import type { RedisTargets } from './redis.js';

/** The browser login, assembled: its stage, its identity method, and the session store to close. */
export interface LoginParts {
  readonly login: Login;
  /** Before route: callback and logout paths; its response phase sends anonymous browsers to log in. */
  readonly stage: LoginStage;
  /** An identity method, after the bearer-token ones. */
  readonly method: SessionMethod;
  close(): Promise<void>;
}

export async function loginFor(
  settings: Settings,
  redis: RedisTargets,
  secrets: SecretStore,
  log: Logger,
  registry: Registry,
): Promise<LoginParts> {
  const store = await sessionStoreFor(settings, redis, log);
  const login = new Login(store, secrets, log.child({ component: 'login' }), registry, new Pages(settings));
  return {
    login,
    stage: new LoginStage(login),
    method: new SessionMethod(login),
    close: () => store.close(),
  };
}

/** memory (standalone: one sidecar, lost on restart), or Redis shared by every sidecar. */
async function sessionStoreFor(settings: Settings, redis: RedisTargets, log: Logger): Promise<SessionStore> {
  const kind = settings.sessionStore;
  if (kind === 'memory') return new MemorySessionStore();
  // ioredis is loaded only when a Redis store is configured.
  const { RedisSessionStore } = await import('../login/redisSessionStore.js');
  const store = new RedisSessionStore({
    ...redis('NOX_SESSION_STORE', kind),
    timeoutMs: settings.sessionTimeoutMs,
    log,
  });
  await store.ready();
  return store;
}
