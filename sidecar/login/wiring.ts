import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import type { Stage } from '../pipeline/types.js';
import type { SecretStore } from '../secrets/secretStore.js';
import { Login } from './login.js';
import { LoginStage } from './loginStage.js';
import { withLoginRedirect } from './redirect.js';
import { SessionMethod, type SessionMethodOptions } from './sessionMethod.js';
import { MemorySessionStore, type SessionStore } from './sessionStore.js';

export interface SessionStoreSettings {
  /** memory (standalone), redis or redis-cluster (shared by every sidecar). */
  readonly kind: 'memory' | 'redis' | 'redis-cluster';
  readonly nodes: readonly { host: string; port: number }[];
  readonly password?: string;
  readonly timeoutMs: number;
}

export async function sessionStoreFor(s: SessionStoreSettings, log: Logger): Promise<SessionStore> {
  if (s.kind === 'memory') return new MemorySessionStore();
  if (s.nodes.length === 0) throw new Error(`a ${s.kind} session store needs NOX_REDIS_NODES`);
  // ioredis is loaded only when a Redis store is configured.
  const { RedisSessionStore } = await import('./redisSessionStore.js');
  const store = new RedisSessionStore({
    nodes: s.nodes,
    cluster: s.kind === 'redis-cluster',
    ...(s.password ? { password: s.password } : {}),
    timeoutMs: s.timeoutMs,
    log,
  });
  await store.ready();
  return store;
}

export interface LoginParts {
  readonly login: Login;
  /** Before route: callback and logout paths. */
  readonly stage: Stage;
  /** An identity method, after the bearer-token ones. */
  readonly method: SessionMethod;
  /** Wraps the access stage: anonymous browsers are sent to log in. */
  wrapAccess(access: Stage): Stage;
  close(): Promise<void>;
}

/** The browser login, assembled: what sidecar/main.ts puts into the pipeline. */
export function createLogin(opts: {
  store: SessionStore;
  secrets: SecretStore;
  log: Logger;
  registry: Registry;
  session?: Partial<SessionMethodOptions>;
}): LoginParts {
  const log = opts.log.child({ component: 'login' });
  const login = new Login(opts.store, opts.secrets, log, opts.registry);
  return {
    login,
    stage: new LoginStage(login),
    method: new SessionMethod(login, opts.session),
    wrapAccess: (access) => withLoginRedirect(access, login),
    close: () => opts.store.close(),
  };
}
