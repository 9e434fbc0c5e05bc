import Fastify from 'fastify';
import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';

export interface Probe {
  ok: boolean;
  reason: string;
}

export interface Probes {
  /** Live: false only when the process should be restarted. */
  live(): Probe;
  /** Ready: caches synced and not shutting down. */
  ready(): Probe;
}

export interface HttpServer {
  readonly port: number;
  close(): Promise<void>;
}

/** /metrics (Prometheus), /healthz (liveness), /readyz (readiness), for the operator. */
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
  const probe =
    (p: Probe, up: string, down: string) => (_req: unknown, reply: { code(n: number): unknown }) => {
      reply.code(p.ok ? 200 : 503);
      return { status: p.ok ? up : down, reason: p.reason };
    };
  app.get('/healthz', async (req, reply) => probe(probes.live(), 'ok', 'unhealthy')(req, reply));
  app.get('/readyz', async (req, reply) => probe(probes.ready(), 'ready', 'not ready')(req, reply));
  await app.listen({ host, port });
  const addr = app.server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  log.info({ host, port: bound }, 'metrics and health server listening');
  return { port: bound, close: () => app.close() };
}
