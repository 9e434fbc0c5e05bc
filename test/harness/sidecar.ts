import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { type Service, scratchDir, start, waitUntil } from './process.js';
import { repoRoot } from './tools.js';

export interface SidecarOptions {
  /** Manifest file or directory (files source). */
  policyPath: string;
  grpcPort?: number;
  httpPort?: number;
  env?: NodeJS.ProcessEnv;
  /** Node's own flags (e.g. --cpu-prof, which NODE_OPTIONS does not take). */
  nodeArgs?: readonly string[];
}

export interface Sidecar {
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly service: Service;
  stop(): Promise<void>;
  /** Starts a new process on the same ports (e.g. after stop()). */
  restart(): Promise<Sidecar>;
}

export const sidecarEntry = join(repoRoot, 'dist', 'sidecar', 'main.js');

/** Starts the built nox-authz (`make build`) and waits until /readyz says ready. */
export async function startSidecar(opts: SidecarOptions): Promise<Sidecar> {
  if (!existsSync(sidecarEntry)) throw new Error(`${sidecarEntry} is missing; run \`make build\``);
  const grpcPort = opts.grpcPort ?? (await freePort());
  const httpPort = opts.httpPort ?? (await freePort());
  // An audit spool of its own (kept across restart()), unless the test names one.
  const env = { NOX_AUDIT_SPOOL_DIR: scratchDir('audit-spool'), ...opts.env };
  const service = start('nox-authz', process.execPath, [...(opts.nodeArgs ?? []), sidecarEntry], {
    env: {
      NOX_GRPC_PORT: String(grpcPort),
      NOX_HTTP_PORT: String(httpPort),
      NOX_POLICY_PATH: opts.policyPath,
      NOX_LOG_LEVEL: 'info',
      ...env,
    },
  });
  await waitUntil(
    'nox-authz /readyz',
    async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status === 200,
    20_000,
    service,
  );
  const self: Sidecar = {
    grpcPort,
    httpPort,
    service,
    stop: () => service.stop(),
    restart: () => startSidecar({ ...opts, env, grpcPort, httpPort }),
  };
  return self;
}

/** A sidecar with no policy: it must come up, stay unready and deny everything. */
export async function startSidecarUnready(): Promise<{
  grpcPort: number;
  httpPort: number;
  stop(): Promise<void>;
}> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const service = start('nox-authz-unready', process.execPath, [sidecarEntry], {
    env: { NOX_GRPC_PORT: String(grpcPort), NOX_HTTP_PORT: String(httpPort), NOX_POLICY_PATH: '' },
  });
  await waitUntil(
    'nox-authz /readyz answering',
    async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status === 503,
    20_000,
    service,
  );
  return { grpcPort, httpPort, stop: () => service.stop() };
}
