/**
 * The audit tables (common/db/migrations/0006_audit_log.sql) and their columns in the order
 * the spool records and COPY carry them: the one place a column is named on the write side.
 */
export const AUDIT_TABLES = {
  audit_decisions: [
    'id',
    'occurred_at',
    'sidecar',
    'request_id',
    'host',
    'method',
    'path',
    'source_ip',
    'policy',
    'rule',
    'provider',
    'subject',
    'client_id',
    'groups_hash',
    'identity_method',
    'decision',
    'code',
    'reason',
    'would_deny',
    'quota_tier',
    'quota_remaining',
    'risk_score',
    'latency_us',
    'snapshot_version',
  ],
  audit_session_events: [
    'id',
    'occurred_at',
    'sidecar',
    'kind',
    'provider',
    'subject',
    'session_hash',
    'source_ip',
    'user_agent',
    'detail',
  ],
  audit_security_events: [
    'id',
    'occurred_at',
    'sidecar',
    'kind',
    'reason',
    'provider',
    'subject',
    'source_ip',
    'detail',
  ],
  audit_admin_actions: ['id', 'occurred_at', 'actor', 'action', 'target', 'before', 'after', 'source_ip'],
} as const;

export type AuditTable = keyof typeof AUDIT_TABLES;
export const AUDIT_TABLE_NAMES = Object.keys(AUDIT_TABLES) as AuditTable[];

type Value = string | number | null;
/** One row: a value (or null) for each column of the table, by name. */
export type AuditRow<T extends AuditTable> = { readonly [C in (typeof AUDIT_TABLES)[T][number]]: Value };

/** A spool record: the table's index in AUDIT_TABLE_NAMES, then the row's values in column order. */
export function encodeRecord<T extends AuditTable>(table: T, row: AuditRow<T>): string {
  const cols = AUDIT_TABLES[table] as readonly string[];
  const values: Value[] = [AUDIT_TABLE_NAMES.indexOf(table)];
  for (const c of cols) values.push((row as Record<string, Value>)[c] ?? null);
  return JSON.stringify(values);
}

export function decodeRecord(record: string): { table: AuditTable; values: Value[] } {
  const parsed = JSON.parse(record) as unknown;
  if (!Array.isArray(parsed) || typeof parsed[0] !== 'number') throw new Error('not an audit record');
  const table = AUDIT_TABLE_NAMES[parsed[0]];
  if (!table || parsed.length !== AUDIT_TABLES[table].length + 1) throw new Error('not an audit record');
  return { table, values: parsed.slice(1) as Value[] };
}

/** One CSV line for COPY ... (FORMAT csv): null is an empty unquoted field, any string is quoted. */
export function csvLine(values: readonly Value[]): string {
  let line = '';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) line += ',';
    if (v === null || v === undefined) continue;
    line += typeof v === 'number' ? String(v) : `"${v.replaceAll('"', '""')}"`;
  }
  return `${line}\n`;
}
