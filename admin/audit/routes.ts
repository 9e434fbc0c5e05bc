import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import QueryStream from 'pg-query-stream';
import { AUDIT_TABLES } from '../../sidecar/audit/tables.js';
import type { Databases } from '../db.js';
import { type Cursor, decodeCursor, encodeCursor, errorSchema } from '../pages.js';
import type { Guard } from '../server.js';
import { type AuditFilters, filterProperties, whereClause } from './filters.js';

/** The columns of a decision event, as the API and the exports name them. */
const COLUMNS = AUDIT_TABLES.audit_decisions;
/** ISO 8601 with microseconds (what the keyset compares), the rest as text or number. */
const SELECT = COLUMNS.map((c) =>
  c === 'occurred_at'
    ? `to_json(occurred_at)#>>'{}' AS occurred_at`
    : c === 'source_ip'
      ? 'host(source_ip) AS source_ip'
      : c === 'id'
        ? 'id::text AS id'
        : c,
).join(', ');

const decisionSchema = {
  type: 'object',
  properties: Object.fromEntries(COLUMNS.map((c) => [c, { type: ['string', 'number', 'null'] }])),
} as const;

export function auditRoutes(app: FastifyInstance, db: Databases, guard: Guard, maxPageSize: number): void {
  app.get<{ Querystring: AuditFilters & { limit?: number; cursor?: string } }>(
    '/v1/audit/decisions',
    {
      preHandler: guard({ resource: 'auditevents', verb: 'list' }),
      schema: {
        summary: 'Search decisions, newest first, a page at a time',
        description:
          'Keyset pagination: the response’s nextCursor, passed back as cursor, gives the page after it; pages do not shift when events arrive meanwhile.',
        tags: ['audit'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...filterProperties,
            limit: { type: 'integer', minimum: 1, maximum: maxPageSize, default: 100 },
            cursor: { type: 'string', maxLength: 512 },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              items: { type: 'array', items: decisionSchema },
              nextCursor: { type: ['string', 'null'] },
              servedBy: { type: 'string', enum: ['replica', 'primary'] },
            },
          },
          400: errorSchema,
        },
      },
    },
    async (req, reply) => {
      const { limit = 100, cursor, ...filters } = req.query;
      let after: Cursor | undefined;
      try {
        after = cursor ? decodeCursor(cursor) : undefined;
      } catch (e) {
        return reply.code(400).send({ error: 'BadCursor', message: (e as Error).message });
      }
      const where = whereClause(filters);
      const params = [...where.params];
      let keyset = '';
      if (after) {
        params.push(after.at, after.id);
        keyset = ` AND (occurred_at, id) < ($${params.length - 1}::timestamptz, $${params.length}::uuid)`;
      }
      params.push(limit + 1);
      const { value: rows, servedBy } = await db.read(
        async (c) =>
          (
            await c.query<Record<string, unknown> & { occurred_at: string; id: string }>(
              `SELECT ${SELECT} FROM audit_decisions ${where.sql}${keyset} ORDER BY occurred_at DESC, id DESC LIMIT $${params.length}`,
              params,
            )
          ).rows,
      );
      const items = rows.slice(0, limit);
      const last = items.at(-1);
      return {
        items,
        nextCursor: rows.length > limit && last ? encodeCursor({ at: last.occurred_at, id: last.id }) : null,
        servedBy,
      };
    },
  );

  app.get<{ Querystring: AuditFilters & { bucket?: 'minute' | 'hour' | 'day' } }>(
    '/v1/audit/stats',
    {
      preHandler: guard({ resource: 'auditevents', verb: 'list' }),
      schema: {
        summary: 'Decisions counted per time bucket, by decision, code and quota tier',
        tags: ['audit'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...filterProperties,
            bucket: { type: 'string', enum: ['minute', 'hour', 'day'], default: 'hour' },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              buckets: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: {
                    start: { type: 'string' },
                    decision: { type: 'string' },
                    code: { type: 'string' },
                    tier: { type: ['string', 'null'] },
                    count: { type: 'integer' },
                  },
                },
              },
              servedBy: { type: 'string' },
            },
          },
        },
      },
    },
    async (req) => {
      const { bucket = 'hour', ...filters } = req.query;
      const where = whereClause(filters, 2);
      const { value: buckets, servedBy } = await db.read(
        async (c) =>
          (
            await c.query(
              `SELECT to_json(date_trunc($1, occurred_at, 'UTC'))#>>'{}' AS start, decision, code, quota_tier AS tier, count(*)::int AS count
                 FROM audit_decisions ${where.sql}
                GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4`,
              [bucket, ...where.params],
            )
          ).rows,
      );
      return { buckets, servedBy };
    },
  );

  app.get<{ Querystring: AuditFilters & { format?: 'csv' | 'json' | 'ndjson'; gzip?: boolean } }>(
    '/v1/audit/export',
    {
      preHandler: guard({ resource: 'auditevents', verb: 'list', subresource: 'export' }),
      schema: {
        summary: 'Every matching decision, streamed (CSV, JSON array or NDJSON; gzip on request)',
        description:
          'Rows are read from a server-side cursor and written as they come, so memory stays flat whatever the count. gzip: with gzip=true or Accept-Encoding: gzip.',
        tags: ['audit'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...filterProperties,
            format: { type: 'string', enum: ['csv', 'json', 'ndjson'], default: 'ndjson' },
            gzip: { type: 'boolean', default: false },
          },
        },
      },
    },
    async (req, reply) => {
      const { format = 'ndjson', gzip = false, ...filters } = req.query;
      const where = whereClause(filters);
      const { client, servedBy } = await db.reader();
      const zip = gzip || /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
      const query = new QueryStream(
        `SELECT ${SELECT} FROM audit_decisions ${where.sql} ORDER BY occurred_at, id`,
        where.params,
        { batchSize: 1000, highWaterMark: 1000 },
      );
      const rows = client.query(query);
      const out = new PassThrough();
      reply
        .header('content-type', contentTypes[format])
        .header('content-disposition', `attachment; filename="decisions.${format}${zip ? '.gz' : ''}"`)
        .header('x-nox-served-by', servedBy);
      if (zip) reply.header('content-encoding', 'gzip');
      // A connection that dies under a cursor (a replica cancelling it for a recovery conflict,
      // a failover) is reported on the client, and the cursor's stream may never hear of it
      // (its destroy waits for a close the dead connection never answers): the response is
      // ended from here, or it would hang half-sent for ever.
      let finished = false;
      const finish = (e?: Error) => {
        if (finished) return;
        finished = true;
        client.removeListener('error', finish);
        client.removeListener('end', ended);
        if (e) {
          req.log.warn({ err: e.message }, 'export stopped');
          out.destroy(e);
        }
        client.release(e !== undefined);
      };
      const ended = () => finish(new Error('the PostgreSQL connection ended during the export'));
      client.on('error', finish);
      client.on('end', ended);
      pipeline(rows, formatter(format), ...(zip ? [createGzip()] : []), out).then(
        () => finish(),
        (e: unknown) => finish(e as Error),
      );
      return reply.send(out);
    },
  );
}

const contentTypes = {
  csv: 'text/csv; charset=utf-8',
  json: 'application/json',
  ndjson: 'application/x-ndjson',
} as const;

/** Rows (objects) → bytes of the format. */
function formatter(format: 'csv' | 'json' | 'ndjson'): Transform {
  let first = true;
  return new Transform({
    writableObjectMode: true,
    transform(row: Record<string, unknown>, _enc, done) {
      let text = '';
      if (format === 'ndjson') text = `${JSON.stringify(row)}\n`;
      else if (format === 'json') text = `${first ? '[' : ','}\n${JSON.stringify(row)}`;
      else {
        if (first) text = `${COLUMNS.join(',')}\n`;
        text += `${COLUMNS.map((c) => csvField(row[c])).join(',')}\n`;
      }
      first = false;
      done(null, text);
    },
    flush(done) {
      done(null, format === 'json' ? (first ? '[]\n' : '\n]\n') : '');
    },
  });
}

/**
 * RFC 4180 quoting. A field that a spreadsheet would run as a formula (starting with = + - @,
 * a tab or a carriage return: paths and reasons come from callers) gets a leading ', as
 * OWASP advises for CSV exports; every other value is exported as stored.
 */
function csvField(v: unknown): string {
  if (v === null || v === undefined) return '';
  let s = String(v);
  if (typeof v === 'string' && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n']/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}
