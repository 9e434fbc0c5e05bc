import { Registry } from 'prom-client';
import { createLogger } from '../../common/logger.js';
import { FileSource } from '../../sidecar/config/fileSource.js';
import { sidecarKinds } from '../../sidecar/config/sources.js';
import { IdentifyStage } from '../../sidecar/identity/identifyStage.js';
import { JwtMethod } from '../../sidecar/identity/jwtMethod.js';
import type { SessionMethodOptions } from '../../sidecar/login/sessionMethod.js';
import {
  createLogin,
  type LoginParts,
  type SessionStoreSettings,
  sessionStoreFor,
} from '../../sidecar/login/wiring.js';
import { Pipeline } from '../../sidecar/pipeline/pipeline.js';
import { PolicyStore } from '../../sidecar/policy/store.js';
import type { SecretStore } from '../../sidecar/secrets/secretStore.js';
import { Checker } from '../../sidecar/server/checker.js';
import { startGrpcServer } from '../../sidecar/server/grpcServer.js';
import { accessStage } from '../../sidecar/stages/access.js';
import { routeStage } from '../../sidecar/stages/route.js';

/** Secrets held in memory: what the Kubernetes or file SecretStore would serve. */
export class MemorySecretStore implements SecretStore {
  readonly #data = new Map<string, Record<string, Buffer>>();
  readonly #listeners: (() => void)[] = [];

  set(namespace: string, name: string, data: Record<string, string | Buffer>): void {
    const bytes = Object.fromEntries(
      Object.entries(data).map(([k, v]) => [k, typeof v === 'string' ? Buffer.from(v) : v]),
    );
    this.#data.set(`${namespace}/${name}`, bytes);
    for (const l of this.#listeners) l();
  }

  get(namespace: string, name: string, key: string): Buffer | undefined {
    return this.#data.get(`${namespace}/${name}`)?.[key];
  }

  select(): ReadonlyMap<string, Readonly<Record<string, Buffer>>> {
    return new Map();
  }

  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  async start(): Promise<void> {}
  async stop(): Promise<void> {}
}

export interface LoginSidecar {
  readonly grpcPort: number;
  readonly parts: LoginParts;
  stop(): Promise<void>;
}

/**
 * A sidecar with the browser login in its pipeline, assembled the way sidecar/main.ts
 * assembles it (createLogin), serving the real ext_authz gRPC API in this process.
 */
export async function startLoginSidecar(opts: {
  policyPath: string;
  store: SessionStoreSettings;
  secrets: SecretStore;
  deadlineMs: number;
  session?: Partial<SessionMethodOptions>;
}): Promise<LoginSidecar> {
  const log = createLogger('nox-authz-login-test', { level: process.env.NOX_TEST_LOG_LEVEL ?? 'warn' });
  const registry = new Registry();
  const policy = new PolicyStore(log, registry);
  const store = await sessionStoreFor(opts.store, log);
  const parts = createLogin({ store, secrets: opts.secrets, log, registry, session: opts.session ?? {} });
  const identify = new IdentifyStage([new JwtMethod(), parts.method], registry);
  policy.onSwap((s) => identify.onSnapshot(s));
  const pipeline = new Pipeline(
    [parts.stage, routeStage, identify, parts.wrapAccess(accessStage)],
    log,
    registry,
  );
  const checker = new Checker(pipeline, policy, opts.deadlineMs, log, registry);
  const grpc = await startGrpcServer(checker, '127.0.0.1', 0, log);
  const source = new FileSource({ path: opts.policyPath, kinds: sidecarKinds, log, registry, rescanMs: 0 });
  await source.start((state) => policy.apply(state));
  grpc.setServing(true);
  return {
    grpcPort: grpc.port,
    parts,
    async stop() {
      await grpc.shutdown(1000);
      await source.stop();
      await parts.close();
    },
  };
}
