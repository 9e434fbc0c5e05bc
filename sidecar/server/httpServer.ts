import Fastify from 'fastify';
import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';

export interface Probes {
  /** Live: the process can serve (false only when it should be restarted). */
  live(): boolean;
  /** Ready: a policy snapshot is loaded and the sidecar is not draining. */
  ready(): { ready: boolean; reason: string };
}

export interface HttpServer {
  readonly port: number;
  close(): Promise<void>;
}

/** /metrics (Prometheus), /healthz (liveness), /readyz (readiness). */
export async function startHttpServer(
  registry: Registry,
  probes: Probes,
  host: string,
  port: number,
  log: Logger,
): Promise<HttpServer> {
  const app = Fastify({ logger: false });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
  app.get('/healthz', async (_req, reply) => {
    const ok = probes.live();
    reply.code(ok ? 200 : 503);
    return { status: ok ? 'ok' : 'unhealthy' };
  });
  app.get('/readyz', async (_req, reply) => {
    const r = probes.ready();
    reply.code(r.ready ? 200 : 503);
    return { status: r.ready ? 'ready' : 'not ready', reason: r.reason };
  });
  await app.listen({ host, port });
  const addr = app.server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  log.info({ host, port: bound }, 'metrics and health server listening');
  return { port: bound, close: () => app.close() };
}
