import type { FastifyInstance } from 'fastify';
import type { Databases } from './db.js';
import { type Cursor, decodeCursor, encodeCursor, errorSchema } from './pages.js';
import type { Guard } from './server.js';

/**
 * Users the sidecars have seen (the users table ProfileSync keeps), newest first, a keyset
 * page at a time; and one user with the accounts linked to it (users.linked_user_id: the same
 * person at another provider, linked by verified email where both providers allow it).
 * Reads only, from a replica when one answers.
 */

const USER = `id::text AS id, provider, subject, email, email_verified AS "emailVerified", name,
  avatar_url AS "avatarUrl", groups, linked_user_id::text AS "linkedUserId",
  to_json(created_at)#>>'{}' AS "createdAt", to_json(updated_at)#>>'{}' AS "updatedAt",
  to_json(last_login_at)#>>'{}' AS "lastLoginAt"`;

const userSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    provider: { type: 'string' },
    subject: { type: 'string' },
    email: { type: ['string', 'null'] },
    emailVerified: { type: 'boolean' },
    name: { type: ['string', 'null'] },
    avatarUrl: { type: ['string', 'null'] },
    groups: { type: 'array', items: { type: 'string' } },
    linkedUserId: { type: ['string', 'null'] },
    createdAt: { type: 'string' },
    updatedAt: { type: 'string' },
    lastLoginAt: { type: ['string', 'null'] },
  },
} as const;

const servedBySchema = { type: 'string', enum: ['replica', 'primary'] } as const;

interface UserQuery {
  readonly email?: string;
  readonly provider?: string;
  readonly limit?: number;
  readonly cursor?: string;
}

export function userRoutes(app: FastifyInstance, db: Databases, guard: Guard, maxPageSize: number): void {
  app.get<{ Querystring: UserQuery }>(
    '/v1/users',
    {
      preHandler: guard({ resource: 'users', verb: 'list' }),
      schema: {
        summary: 'Users seen through any OAuth2Provider, newest first, a page at a time',
        description:
          'email: exact, case-insensitive. provider: the OAuth2Provider as "<namespace>/<name>". Keyset pagination: pass nextCursor back as cursor.',
        tags: ['users'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            email: { type: 'string', minLength: 1, maxLength: 320 },
            provider: { type: 'string', pattern: '^[^/]+/[^/]+$', maxLength: 317 },
            limit: { type: 'integer', minimum: 1, maximum: maxPageSize, default: 100 },
            cursor: { type: 'string', maxLength: 512 },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              items: { type: 'array', items: userSchema },
              nextCursor: { type: ['string', 'null'] },
              servedBy: servedBySchema,
            },
          },
          400: errorSchema,
        },
      },
    },
    async (req, reply) => {
      const { email, provider, limit = 100, cursor } = req.query;
      let after: Cursor | undefined;
      try {
        after = cursor ? decodeCursor(cursor) : undefined;
      } catch (e) {
        return reply.code(400).send({ error: 'BadCursor', message: (e as Error).message });
      }
      const where: string[] = [];
      const params: unknown[] = [];
      // lower(email): the users_email_idx expression.
      if (email !== undefined) where.push(`lower(email) = lower($${params.push(email)})`);
      if (provider !== undefined) where.push(`provider = $${params.push(provider)}`);
      if (after) {
        params.push(after.at, after.id);
        where.push(`(created_at, id) < ($${params.length - 1}::timestamptz, $${params.length}::uuid)`);
      }
      params.push(limit + 1);
      const { value: rows, servedBy } = await db.read(
        async (c) =>
          (
            await c.query<{ id: string; createdAt: string }>(
              `SELECT ${USER} FROM users ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
               ORDER BY created_at DESC, id DESC LIMIT $${params.length}`,
              params,
            )
          ).rows,
      );
      const items = rows.slice(0, limit);
      const last = items.at(-1);
      return {
        items,
        nextCursor: rows.length > limit && last ? encodeCursor({ at: last.createdAt, id: last.id }) : null,
        servedBy,
      };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/users/:id',
    {
      preHandler: guard({ resource: 'users', verb: 'get' }),
      schema: {
        summary: 'One user, with the accounts linked to it',
        description:
          'linkedAccounts: every other account of the same person (the account this one is linked to, and those linked to that one), oldest first.',
        tags: ['users'],
        params: { type: 'object', required: ['id'], properties: { id: { type: 'string', format: 'uuid' } } },
        response: {
          200: {
            type: 'object',
            properties: {
              user: userSchema,
              linkedAccounts: { type: 'array', items: userSchema },
              servedBy: servedBySchema,
            },
          },
          404: errorSchema,
        },
      },
    },
    async (req, reply) => {
      const { value, servedBy } = await db.read(async (c) => {
        const { rows } = await c.query(`SELECT ${USER} FROM users WHERE id = $1`, [req.params.id]);
        if (!rows[0]) return undefined;
        // Links are one level deep (ProfileSync links to an account that is not itself linked):
        // the group is the root account and everything linked to it.
        const linked = await c.query(
          `WITH root AS (SELECT coalesce(linked_user_id, id) AS rid FROM users WHERE id = $1)
           SELECT ${USER} FROM users JOIN root ON users.id = root.rid OR users.linked_user_id = root.rid
            WHERE users.id <> $1 ORDER BY created_at, id`,
          [req.params.id],
        );
        return { user: rows[0], linkedAccounts: linked.rows };
      });
      if (!value) return reply.code(404).send({ error: 'NotFound', message: `no user ${req.params.id}` });
      return { ...value, servedBy };
    },
  );
}
