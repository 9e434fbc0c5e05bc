/**
 * The filters every audit read takes (search, stats, export), as one JSON schema for the
 * query string (validated by the server, listed in the OpenAPI document) and one SQL
 * condition built from it with parameters, never with the values spliced in.
 */

export const filterProperties = {
  from: {
    type: 'string',
    format: 'date-time',
    description: 'Oldest event time (inclusive); default: 24 hours before `to`.',
  },
  to: { type: 'string', format: 'date-time', description: 'Newest event time (exclusive); default: now.' },
  subject: {
    type: 'string',
    maxLength: 512,
    description: 'The caller’s subject, exactly ("<provider>:<sub>").',
  },
  decision: { type: 'string', enum: ['allow', 'deny'] },
  code: {
    type: 'string',
    pattern: '^[A-Z_]{2,64}$|^ok$',
    description: 'The deny code (sidecar/errors.ts), or ok.',
  },
  host: { type: 'string', maxLength: 253 },
  pathPrefix: { type: 'string', maxLength: 1024, pattern: '^/', description: 'Paths starting with this.' },
  policy: { type: 'string', maxLength: 253, description: 'The AccessPolicy, as namespace/name.' },
} as const;

export interface AuditFilters {
  readonly from?: string;
  readonly to?: string;
  readonly subject?: string;
  readonly decision?: 'allow' | 'deny';
  readonly code?: string;
  readonly host?: string;
  readonly pathPrefix?: string;
  readonly policy?: string;
}

const DAY_MS = 86_400_000;

/** The time window: [from, to), at most what was asked, to now by default. */
export function window(f: AuditFilters, now = new Date()): { from: Date; to: Date } {
  const to = f.to ? new Date(f.to) : now;
  const from = f.from ? new Date(f.from) : new Date(to.getTime() - DAY_MS);
  return { from, to };
}

/** `WHERE ...` over audit_decisions for `f`, with its parameters starting at $`first`. */
export function whereClause(
  f: AuditFilters,
  first = 1,
  now = new Date(),
): { sql: string; params: unknown[] } {
  const { from, to } = window(f, now);
  const params: unknown[] = [from, to];
  const conds = [`occurred_at >= $${first}`, `occurred_at < $${first + 1}`];
  const eq = (column: string, v: string | undefined) => {
    if (v === undefined) return;
    params.push(v);
    conds.push(`${column} = $${first + params.length - 1}`);
  };
  eq('subject', f.subject);
  eq('decision', f.decision);
  eq('code', f.code);
  eq('host', f.host);
  eq('policy', f.policy);
  if (f.pathPrefix !== undefined) {
    // LIKE with the prefix's own wildcards escaped: "/a_b" means "/a_b", not "/a?b".
    params.push(`${f.pathPrefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
    conds.push(`path LIKE $${first + params.length - 1}`);
  }
  return { sql: `WHERE ${conds.join(' AND ')}`, params };
}
