import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { decodeJwt } from 'jose';
import type { Databases } from './db.js';
import { recordSecurityEvent } from './events.js';
import { recordAdminAction } from './overrides.js';
import { errorSchema } from './pages.js';
import { type AdminRedis, NoRedis } from './redis.js';
import type { Guard } from './server.js';
import { endSession } from './sessions.js';

/**
 * Revocations (RedisRevocations, the set every sidecar copies and is told about on pub/sub):
 * a subject, a token or a browser session refused everywhere within about a second. The ids
 * are the ones the identify stage checks: "subject:<provider>:<sub>" and "token:<sha256 of the
 * token, base64url>". A token is hashed on arrival: neither Redis, the audit log nor a log
 * line ever holds it. A session is ended in the session store (deleted, every sidecar told to
 * drop its copy), as DELETE /v1/sessions/{hash} does: a deleted session cannot come back, so
 * it needs no entry in the list.
 */

const DAY_MS = 86_400_000;
/** Without `until`: a token's own expiry (a JWT's exp, plus clock skew), else this long. */
const DEFAULT_MS = 30 * DAY_MS;
const MAX_MS = 366 * DAY_MS;
const SKEW_MS = 5 * 60_000;

interface RevocationBody {
  readonly kind: 'subject' | 'token' | 'session';
  readonly value: string;
  readonly until?: string;
  readonly reason?: string;
}

const entrySchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    kind: { type: 'string', enum: ['subject', 'token', 'session', 'block'] },
    until: { type: ['string', 'null'] },
  },
} as const;

const kindOf = (id: string) => id.slice(0, id.indexOf(':'));

export function revocationRoutes(app: FastifyInstance, db: Databases, redis: AdminRedis, guard: Guard): void {
  app.post<{ Body: RevocationBody }>(
    '/v1/revocations',
    {
      preHandler: guard({ resource: 'revocations', verb: 'create' }),
      schema: {
        summary: 'Revoke a subject, a token or a browser session on every sidecar',
        description:
          'kind subject: value "<provider>:<sub>" (as x-nox-user shows it); every credential of that subject is refused. kind token: value is the token itself, hashed here and never stored. kind session: value is the session hash that GET /v1/sessions lists; the session is ended. Every sidecar refuses it within about a second. until (subject, token): when the entry lapses; default the JWT’s exp (plus 5 minutes), else 30 days; at most 366 days.',
        tags: ['revocations'],
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['kind', 'value'],
          properties: {
            kind: { type: 'string', enum: ['subject', 'token', 'session'] },
            value: { type: 'string', minLength: 1, maxLength: 16_384 },
            until: { type: 'string', format: 'date-time' },
            reason: { type: 'string', maxLength: 1024 },
          },
        },
        response: { 201: entrySchema, 400: errorSchema, 404: errorSchema, 503: errorSchema },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const caller = req.caller!;
      if (b.kind === 'session') {
        // Ending a session is DELETE /v1/sessions/{hash}'s permission, whichever route asks.
        await guard({ resource: 'sessions', verb: 'delete' })(req, reply);
        const sessions = redis.sessions;
        if (!sessions) throw new NoRedis('NOX_SESSION_STORE');
        if (!/^[0-9a-f]{64}$/.test(b.value))
          return reply
            .code(400)
            .send({ error: 'BadRevocation', message: 'a session is named by its hash (64 hex digits)' });
        const ended = await endSession(db, sessions, b.value, caller, req.ip, b.reason);
        if (!ended) return reply.code(404).send({ error: 'NotFound', message: `no live session ${b.value}` });
        return reply.code(201).send({ id: `session:${b.value}`, kind: 'session', until: null });
      }
      const revocations = redis.revocations;
      if (!revocations) throw new NoRedis('NOX_QUOTA_STORE');
      if (b.kind === 'subject' && !/^[^:\s]+:\S/.test(b.value))
        return reply.code(400).send({ error: 'BadRevocation', message: 'a subject is "<provider>:<sub>"' });
      const now = Date.now();
      const until = b.until ? Date.parse(b.until) : defaultUntil(b, now);
      if (until <= now)
        return reply.code(400).send({ error: 'BadRevocation', message: 'until is in the past' });
      if (until > now + MAX_MS)
        return reply.code(400).send({ error: 'BadRevocation', message: 'until is more than 366 days away' });
      const id =
        b.kind === 'token'
          ? `token:${createHash('sha256').update(b.value).digest('base64url')}`
          : `subject:${b.value}`;
      await db.write(async (c) => {
        const before = await revocations.until(id, now);
        await recordAdminAction(
          c,
          caller,
          'revocation.create',
          id,
          before === undefined ? null : { id, until: new Date(before).toISOString() },
          { id, until: new Date(until).toISOString(), ...(b.reason ? { reason: b.reason } : {}) },
          req.ip,
        );
        await recordSecurityEvent(c, {
          kind: 'revocation',
          caller,
          sourceIp: req.ip,
          ...(b.reason ? { reason: b.reason } : {}),
          ...(b.kind === 'subject' ? { subject: b.value } : {}),
          detail: { id, until: new Date(until).toISOString() },
        });
        // Last in the transaction: a revocation that could not be audited is not made; one
        // Redis refused rolls the audit rows back.
        await revocations.revoke(id, until);
      });
      return reply.code(201).send({ id, kind: b.kind, until: new Date(until).toISOString() });
    },
  );

  app.delete<{ Params: { id: string }; Querystring: { reason?: string } }>(
    '/v1/revocations/:id',
    {
      preHandler: guard({ resource: 'revocations', verb: 'delete' }),
      schema: {
        summary: 'Lift a revocation or a RiskModel block on every sidecar',
        description:
          'id as GET /v1/revocations lists it ("subject:…", "token:…", "block:…"). Every sidecar drops it within about a second. Audited (revocation.delete) with the entry it lifted.',
        tags: ['revocations'],
        params: {
          type: 'object',
          required: ['id'],
          properties: { id: { type: 'string', pattern: '^(subject|token|block):\\S+$', maxLength: 1024 } },
        },
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { reason: { type: 'string', maxLength: 1024 } },
        },
        response: { 404: errorSchema, 503: errorSchema },
      },
    },
    async (req, reply) => {
      const revocations = redis.revocations;
      if (!revocations) throw new NoRedis('NOX_QUOTA_STORE');
      const { id } = req.params;
      const now = Date.now();
      let lifted = false;
      await db.write(async (c) => {
        const before = await revocations.until(id, now);
        if (before === undefined) return;
        await recordAdminAction(
          c,
          req.caller!,
          'revocation.delete',
          id,
          { id, until: new Date(before).toISOString() },
          req.query.reason ? { reason: req.query.reason } : null,
          req.ip,
        );
        // Last in the transaction, as for a revocation: one Redis refused rolls the audit back.
        lifted = await revocations.lift(id);
      });
      if (!lifted)
        return reply.code(404).send({ error: 'NotFound', message: `no revocation ${id} in force` });
      return reply.code(204).send();
    },
  );

  app.get<{ Querystring: { kind?: 'subject' | 'token' | 'block'; limit?: number } }>(
    '/v1/revocations',
    {
      preHandler: guard({ resource: 'revocations', verb: 'list' }),
      schema: {
        summary: 'Revocations in force, soonest to lapse first',
        description:
          'From Redis, as every sidecar reads them. Tokens appear by hash only. more: entries beyond limit exist.',
        tags: ['revocations'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            kind: { type: 'string', enum: ['subject', 'token', 'block'] },
            limit: { type: 'integer', minimum: 1, maximum: 10_000, default: 1000 },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: { items: { type: 'array', items: entrySchema }, more: { type: 'boolean' } },
          },
          503: errorSchema,
        },
      },
    },
    async (req) => {
      const revocations = redis.revocations;
      if (!revocations) throw new NoRedis('NOX_QUOTA_STORE');
      const { kind, limit = 1000 } = req.query;
      // The set is small (entries lapse); a kind filter reads it whole, at most 10 000 at a time.
      const entries = await revocations.entries(Date.now(), kind ? 10_000 : limit + 1);
      const items = entries
        .filter((e) => !kind || kindOf(e.id) === kind)
        .map((e) => ({ id: e.id, kind: kindOf(e.id), until: new Date(e.until).toISOString() }));
      return { items: items.slice(0, limit), more: items.length > limit };
    },
  );
}

function defaultUntil(b: RevocationBody, now: number): number {
  if (b.kind === 'token') {
    try {
      const { exp } = decodeJwt(b.value);
      // Not verified, and need not be: it only says how long the entry is worth keeping.
      if (typeof exp === 'number' && exp * 1000 > now) return Math.min(exp * 1000 + SKEW_MS, now + MAX_MS);
    } catch {
      // not a JWT: an opaque token, whose lifetime only its issuer knows
    }
  }
  return now + DEFAULT_MS;
}
