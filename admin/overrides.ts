import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { OVERRIDES_CHANNEL, validateOverride } from '../sidecar/quota/overrides.js';
import { subjectHash } from '../sidecar/quota/subject.js';
import type { Caller } from './auth.js';
import type { Databases } from './db.js';
import type { Guard } from './server.js';

/**
 * Quota overrides (the quota_overrides table every sidecar polls): list, create or replace,
 * delete. A new row is checked with the sidecar's own rule (validateOverride) before it is
 * written, so the API never stores what every sidecar would refuse. Each change is recorded
 * in audit_admin_actions in the same transaction: no override changes unaudited.
 */

const overrideSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    subjectHash: { type: 'string' },
    subject: { type: ['string', 'null'] },
    policy: { type: 'string' },
    tier: { type: ['string', 'null'] },
    limits: { type: ['array', 'null'], items: { type: 'object', additionalProperties: true } },
    reason: { type: ['string', 'null'] },
    expiresAt: { type: ['string', 'null'] },
    createdBy: { type: 'string' },
    updatedAt: { type: 'string' },
  },
} as const;

interface OverrideBody {
  readonly subject: readonly string[];
  readonly policy: string;
  readonly tier?: string;
  readonly limits?: unknown[];
  readonly reason?: string;
  readonly expiresAt?: string;
}

const SELECT = `id::text, subject_hash AS "subjectHash", subject, policy, tier, limits, reason,
  to_json(expires_at)#>>'{}' AS "expiresAt", created_by AS "createdBy", to_json(updated_at)#>>'{}' AS "updatedAt"`;

export function overrideRoutes(app: FastifyInstance, db: Databases, guard: Guard): void {
  app.get<{ Querystring: { policy?: string } }>(
    '/v1/overrides',
    {
      preHandler: guard({ resource: 'quotaoverrides', verb: 'list' }),
      schema: {
        summary: 'Quota overrides in force or expired',
        tags: ['quota'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { policy: { type: 'string', maxLength: 253 } },
        },
        response: {
          200: { type: 'object', properties: { items: { type: 'array', items: overrideSchema } } },
        },
      },
    },
    async (req) => {
      const { value } = await db.read(async (c) =>
        req.query.policy
          ? c.query(`SELECT ${SELECT} FROM quota_overrides WHERE policy = $1 ORDER BY updated_at DESC`, [
              req.query.policy,
            ])
          : c.query(`SELECT ${SELECT} FROM quota_overrides ORDER BY updated_at DESC`),
      );
      return { items: value.rows };
    },
  );

  app.put<{ Body: OverrideBody }>(
    '/v1/overrides',
    {
      preHandler: guard({ resource: 'quotaoverrides', verb: 'create' }),
      schema: {
        summary: 'Create or replace the override of one subject under one QuotaPolicy',
        description:
          'subject: the quota subject’s parts as the QuotaPolicy builds them, e.g. ["User=corp:alice"]; it is stored hashed, as the sidecars key it. Every sidecar applies it at its next poll.',
        tags: ['quota'],
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['subject', 'policy'],
          properties: {
            subject: {
              type: 'array',
              minItems: 1,
              maxItems: 8,
              items: { type: 'string', minLength: 1, maxLength: 512 },
            },
            policy: {
              type: 'string',
              pattern: '^[^/]+/[^/]+$',
              description: '<namespace>/<QuotaPolicy name>',
            },
            tier: { type: 'string', maxLength: 63 },
            limits: { type: 'array', items: { type: 'object' } },
            reason: { type: 'string', maxLength: 1024 },
            expiresAt: { type: 'string', format: 'date-time' },
          },
        },
        response: {
          200: overrideSchema,
          400: { type: 'object', properties: { error: { type: 'string' }, message: { type: 'string' } } },
        },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const hash = subjectHash(b.subject);
      const checked = validateOverride({
        subject_hash: hash,
        policy: b.policy,
        tier: b.tier ?? null,
        limits: b.limits ?? null,
        expires_at: b.expiresAt ? new Date(b.expiresAt) : null,
      } as Parameters<typeof validateOverride>[0]);
      if ('refused' in checked)
        return reply.code(400).send({ error: 'BadOverride', message: checked.refused });
      if (b.expiresAt && Date.parse(b.expiresAt) <= Date.now())
        return reply.code(400).send({ error: 'BadOverride', message: 'expiresAt is in the past' });
      const caller = req.caller!;
      return db.write(async (c) => {
        const before = await current(c, hash, b.policy);
        const { rows } = await c.query(
          `INSERT INTO quota_overrides (subject_hash, subject, policy, tier, limits, reason, expires_at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT ON CONSTRAINT quota_overrides_subject_policy_key DO UPDATE SET
             subject = EXCLUDED.subject, tier = EXCLUDED.tier, limits = EXCLUDED.limits, reason = EXCLUDED.reason,
             expires_at = EXCLUDED.expires_at, created_by = EXCLUDED.created_by
           RETURNING ${SELECT}`,
          [
            hash,
            b.subject.join(' '),
            b.policy,
            b.tier ?? null,
            b.limits ? JSON.stringify(b.limits) : null,
            b.reason ?? null,
            b.expiresAt ?? null,
            caller.username,
          ],
        );
        await recordAdminAction(
          c,
          caller,
          before ? 'override.replace' : 'override.create',
          `${b.policy} ${hash}`,
          before,
          rows[0],
          req.ip,
        );
        await c.query('SELECT pg_notify($1, $2)', [OVERRIDES_CHANNEL, b.policy]);
        return rows[0];
      });
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/overrides/:id',
    {
      preHandler: guard({ resource: 'quotaoverrides', verb: 'delete' }),
      schema: {
        summary: 'Delete an override: the subject is back to its tier at the sidecars’ next poll',
        tags: ['quota'],
        params: { type: 'object', properties: { id: { type: 'string', format: 'uuid' } }, required: ['id'] },
      },
    },
    async (req, reply) => {
      const caller = req.caller!;
      const deleted = await db.write(async (c) => {
        const { rows } = await c.query(`DELETE FROM quota_overrides WHERE id = $1 RETURNING ${SELECT}`, [
          req.params.id,
        ]);
        if (rows[0]) {
          await recordAdminAction(
            c,
            caller,
            'override.delete',
            `${rows[0].policy} ${rows[0].subjectHash}`,
            rows[0],
            null,
            req.ip,
          );
          await c.query('SELECT pg_notify($1, $2)', [OVERRIDES_CHANNEL, rows[0].policy]);
        }
        return rows[0];
      });
      if (!deleted)
        return reply.code(404).send({ error: 'NotFound', message: `no override ${req.params.id}` });
      return reply.code(204).send();
    },
  );
}

async function current(c: pg.PoolClient, hash: string, policy: string): Promise<unknown> {
  const { rows } = await c.query(
    `SELECT ${SELECT} FROM quota_overrides WHERE subject_hash = $1 AND policy = $2`,
    [hash, policy],
  );
  return rows[0];
}

/** One row of audit_admin_actions, in the caller's transaction. */
export async function recordAdminAction(
  c: pg.PoolClient,
  caller: Caller,
  action: string,
  target: string,
  before: unknown,
  after: unknown,
  sourceIp: string,
): Promise<void> {
  await c.query(
    `INSERT INTO audit_admin_actions (id, occurred_at, actor, action, target, before, after, source_ip)
     VALUES ($1, now(), $2, $3, $4, $5, $6, $7)`,
    [
      randomUUID(),
      caller.username,
      action,
      target,
      before === undefined || before === null ? null : JSON.stringify(before),
      after === undefined || after === null ? null : JSON.stringify(after),
      sourceIp || null,
    ],
  );
}
