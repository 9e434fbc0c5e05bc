import swagger from '@fastify/swagger';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../common/logger.js';
import { auditRoutes } from './audit/routes.js';
import { type Caller, Forbidden, type KubeAuth, type Permission, Unauthenticated } from './auth.js';
import type { Databases } from './db.js';
import { overrideRoutes } from './overrides.js';
import { type AdminRedis, NoRedis } from './redis.js';
import { revocationRoutes } from './revocations.js';
import { sessionRoutes } from './sessions.js';
import { pageRoutes } from './ui/page.js';
import { type QuotaPolicySource, usageRoutes } from './usage.js';
import { userRoutes } from './users.js';

declare module 'fastify' {
  interface FastifyRequest {
    caller?: Caller;
  }
}

/** A route's preHandler: the caller authenticated (TokenReview) and allowed `p` (SubjectAccessReview). */
export type Guard = (p: Permission) => (req: FastifyRequest, reply: FastifyReply) => Promise<void>;

export interface AdminServerOptions {
  readonly db: Databases;
  readonly auth: KubeAuth;
  readonly log: Logger;
  readonly registry: Registry;
  readonly maxPageSize: number;
  /** The sidecars' Redis (revocations, sessions, live quota); parts absent answer 503. */
  readonly redis?: AdminRedis;
  /** QuotaPolicies, for the live part of /v1/usage. */
  readonly quotaPolicy?: QuotaPolicySource;
}

/**
 * The admin API: every route under /v1 is authenticated by the caller's Kubernetes token and
 * authorized by RBAC on a nox.dev resource (auth.ts); requests are validated against the
 * same JSON schemas the OpenAPI 3.1 document at /openapi.json is made of, so the document
 * and the checks cannot drift apart.
 */
export async function buildAdminServer(opts: AdminServerOptions): Promise<FastifyInstance> {
  // pino's Logger and fastify's base logger type differ only in a field fastify never reads.
  const app = Fastify({
    loggerInstance: opts.log as unknown as FastifyBaseLogger,
    // The token is in a header; pino's redaction covers it in request logs.
    disableRequestLogging: true,
    ajv: { customOptions: { coerceTypes: 'array', removeAdditional: false, allErrors: false } },
  });
  const requests = new Counter({
    name: 'nox_admin_requests_total',
    help: 'Admin API requests, by route and status code.',
    labelNames: ['route', 'code'],
    registers: [opts.registry],
  });
  const seconds = new Histogram({
    name: 'nox_admin_request_duration_seconds',
    help: 'Admin API request time to the response head, by route.',
    labelNames: ['route'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [opts.registry],
  });
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    requests.inc({ route, code: String(reply.statusCode) });
    seconds.observe({ route }, reply.elapsedTime / 1000);
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Nox admin API',
        version: 'v1',
        description:
          'Audit search, stats and export; quota overrides and usage; users; browser sessions; revocations. Authenticate with a Kubernetes bearer token; each operation needs the nox.dev RBAC verb it names.',
      },
      components: { securitySchemes: { kubernetes: { type: 'http', scheme: 'bearer' } } },
      security: [{ kubernetes: [] }],
    },
  });

  const guard: Guard = (p) => async (req) => {
    const caller = await opts.auth.authenticate(req.headers.authorization);
    await opts.auth.authorize(caller, p);
    req.caller = caller;
  };

  app.setErrorHandler((err, req, reply) => {
    if (err instanceof Unauthenticated)
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer')
        .send({ error: 'Unauthenticated', message: err.message });
    if (err instanceof Forbidden) return reply.code(403).send({ error: 'Forbidden', message: err.message });
    if (err instanceof NoRedis) return reply.code(503).send({ error: 'NoRedis', message: err.message });
    const e = err as { validation?: unknown; statusCode?: number; message: string };
    if (e.validation) return reply.code(400).send({ error: 'BadRequest', message: e.message });
    if (e.statusCode && e.statusCode < 500)
      return reply.code(e.statusCode).send({ error: 'BadRequest', message: e.message });
    req.log.error({ err: e.message, route: req.routeOptions.url }, 'admin request failed');
    return reply
      .code(503)
      .send({ error: 'Unavailable', message: 'the request could not be served; see the admin API log' });
  });

  pageRoutes(app);
  auditRoutes(app, opts.db, guard, opts.maxPageSize);
  overrideRoutes(app, opts.db, guard);
  const redis = opts.redis ?? { close: async () => {} };
  usageRoutes(app, opts.db, redis, opts.quotaPolicy, guard);
  userRoutes(app, opts.db, guard, opts.maxPageSize);
  sessionRoutes(app, opts.db, redis, guard);
  revocationRoutes(app, opts.db, redis, guard);

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  app.get('/healthz', { schema: { hide: true } }, async () => ({ ok: true }));
  app.get('/readyz', { schema: { hide: true } }, async (_req, reply) => {
    try {
      await opts.db.rw.query('SELECT 1');
      return { ok: true };
    } catch (e) {
      return reply.code(503).send({ ok: false, reason: `PostgreSQL: ${(e as Error).message}` });
    }
  });
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) =>
    reply.header('content-type', opts.registry.contentType).send(await opts.registry.metrics()),
  );
  return app;
}
