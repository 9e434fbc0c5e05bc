import type { FastifyInstance } from 'fastify';
import type { SessionRecord } from '../sidecar/login/sessionStore.js';
import type { Caller } from './auth.js';
import type { Databases } from './db.js';
import { recordSessionEvent } from './events.js';
import { recordAdminAction } from './overrides.js';
import { errorSchema } from './pages.js';
import { type AdminRedis, NoRedis } from './redis.js';
import type { Guard } from './server.js';

/**
 * Browser sessions, from the store every sidecar shares (RedisSessionStore): a subject's live
 * sessions, and ending one. A session is named by its hash (sha256 of the cookie's id, as the
 * store keys it): a listing never yields a usable cookie, and tokens and claims never leave
 * the store. Ending one is audited with what the session was.
 */

const MAX_LISTED = 1000;

const sessionSchema = {
  type: 'object',
  properties: {
    hash: { type: 'string' },
    provider: { type: 'string' },
    subject: { type: 'string' },
    scopes: { type: 'array', items: { type: 'string' } },
    createdAt: { type: 'string' },
    expiresAt: { type: 'string' },
    accessExpiresAt: { type: ['string', 'null'] },
    refreshedAt: { type: ['string', 'null'] },
    hasRefreshToken: { type: 'boolean' },
  },
} as const;

const hashParam = {
  type: 'object',
  required: ['hash'],
  properties: { hash: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
} as const;

export function sessionRoutes(app: FastifyInstance, db: Databases, redis: AdminRedis, guard: Guard): void {
  app.get<{ Querystring: { subject: string } }>(
    '/v1/sessions',
    {
      preHandler: guard({ resource: 'sessions', verb: 'list' }),
      schema: {
        summary: 'The live browser sessions of one subject',
        description: `subject: "<provider>:<sub>", as x-nox-user shows it. At most ${MAX_LISTED}, newest to expire last.`,
        tags: ['sessions'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          required: ['subject'],
          properties: { subject: { type: 'string', minLength: 3, maxLength: 512, pattern: '^[^:\\s]+:\\S' } },
        },
        response: {
          200: { type: 'object', properties: { items: { type: 'array', items: sessionSchema } } },
          400: errorSchema,
          503: errorSchema,
        },
      },
    },
    async (req) => {
      if (!redis.sessions) throw new NoRedis('NOX_SESSION_STORE');
      const found = await redis.sessions.bySubject(req.query.subject, MAX_LISTED);
      const now = Date.now();
      return {
        items: found.filter((s) => s.record.expiresAt > now).map((s) => sessionSummary(s.hash, s.record)),
      };
    },
  );

  app.delete<{ Params: { hash: string }; Querystring: { reason?: string } }>(
    '/v1/sessions/:hash',
    {
      preHandler: guard({ resource: 'sessions', verb: 'delete' }),
      schema: {
        summary: 'End a browser session on every sidecar',
        description:
          'The session is deleted from the shared store and every sidecar drops its copy: its cookie is refused within about a second.',
        tags: ['sessions'],
        params: hashParam,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { reason: { type: 'string', maxLength: 1024 } },
        },
        response: { 404: errorSchema, 503: errorSchema },
      },
    },
    async (req, reply) => {
      if (!redis.sessions) throw new NoRedis('NOX_SESSION_STORE');
      const ended = await endSession(
        db,
        redis.sessions,
        req.params.hash,
        req.caller!,
        req.ip,
        req.query.reason,
      );
      if (!ended)
        return reply.code(404).send({ error: 'NotFound', message: `no live session ${req.params.hash}` });
      return reply.code(204).send();
    },
  );
}

/**
 * Ends one browser session, audited (action session.delete) with what it was: false when
 * there was none. The store deletes it and tells every sidecar to drop its cached copy.
 */
export async function endSession(
  db: Databases,
  sessions: NonNullable<AdminRedis['sessions']>,
  hash: string,
  caller: Caller,
  sourceIp: string,
  reason?: string,
): Promise<boolean> {
  const record = await sessions.get(hash);
  if (!record) return false;
  await db.write(async (c) => {
    await recordAdminAction(
      c,
      caller,
      'session.delete',
      `session:${hash}`,
      sessionSummary(hash, record),
      reason ? { reason } : null,
      sourceIp,
    );
    await recordSessionEvent(c, {
      kind: 'revocation',
      caller,
      sourceIp,
      provider: record.provider,
      subject: record.subject,
      sessionHash: hash,
      ...(reason ? { detail: { reason } } : {}),
    });
    // Last in the transaction, as for every admin write: not ended unless audited.
    await sessions.revoke(hash);
  });
  return true;
}

/** What the admin API shows of a session: who, which provider, when; never claims or tokens. */
export function sessionSummary(hash: string, r: SessionRecord) {
  return {
    hash,
    provider: r.provider,
    subject: r.subject,
    scopes: [...r.scopes],
    createdAt: new Date(r.createdAt).toISOString(),
    expiresAt: new Date(r.expiresAt).toISOString(),
    accessExpiresAt: r.accessExpiresAt ? new Date(r.accessExpiresAt).toISOString() : null,
    refreshedAt: r.refreshedAt ? new Date(r.refreshedAt).toISOString() : null,
    hasRefreshToken: r.hasRefreshToken,
  };
}
