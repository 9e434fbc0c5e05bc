import Fastify from 'fastify';
import type { Registry } from 'prom-client';
import type { Logger } from './logger.js';

/** One probe's answer: `reason` says what is wrong (or what is fine) in words an operator can act on. */
export interface Probe {
  ok: boolean;
  reason: string;
}

export interface Probes {
  /** Live: false only when the process should be restarted. */
  live(): Probe;
  /** Ready: the program can do its work (caches synced, a policy snapshot loaded) and is not draining. */
  ready(): Probe;
}

export interface HttpServer {
  readonly port: number;
  close(): Promise<void>;
}

/** /metrics (Prometheus), /healthz (liveness), /readyz (readiness): the same for every Nox program. */
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
  const answer = (p: Probe, up: string, down: string, reply: { code(n: number): unknown }) => {
    reply.code(p.ok ? 200 : 503);
    return { status: p.ok ? up : down, reason: p.reason };
  };
  app.get('/healthz', async (_req, reply) => answer(probes.live(), 'ok', 'unhealthy', reply));
  app.get('/readyz', async (_req, reply) => answer(probes.ready(), 'ready', 'not ready', reply));
  await app.listen({ host, port });
  const addr = app.server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  log.info({ host, port: bound }, 'metrics and health server listening');
  return { port: bound, close: () => app.close() };
}
