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

/**
 * A spool record: the table's index in AUDIT_TABLE_NAMES, a tab, then the row in PostgreSQL's
 * COPY text format (tab-separated, \N for null, backslash escapes), so that the shipper sends
 * it to COPY as it is, without decoding it, and a record never holds a raw line break.
 */
export function encodeRecord<T extends AuditTable>(table: T, row: AuditRow<T>): string {
  const cols = AUDIT_TABLES[table] as readonly string[];
  let line = String(AUDIT_TABLE_NAMES.indexOf(table));
  for (const c of cols) line += `\t${copyText((row as Record<string, Value>)[c])}`;
  return line;
}

/** The table and the COPY line of a record; throws on one that is not whole (a torn or foreign line). */
export function decodeRecord(record: string): { table: AuditTable; line: string; occurredAt: string } {
  const tab = record.indexOf('\t');
  const table = AUDIT_TABLE_NAMES[Number(record.slice(0, tab))];
  if (tab < 1 || !table) throw new Error('not an audit record');
  let fields = 1;
  for (let i = record.indexOf('\t', tab + 1); i !== -1; i = record.indexOf('\t', i + 1)) fields++;
  if (fields !== AUDIT_TABLES[table].length) throw new Error('not an audit record');
  const line = record.slice(tab + 1);
  // occurred_at is every table's second column.
  const first = line.indexOf('\t');
  return { table, line, occurredAt: line.slice(first + 1, line.indexOf('\t', first + 1)) };
}

const escapes: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** A value in COPY's text format. */
function copyText(v: Value | undefined): string {
  if (v === null || v === undefined) return '\\N';
  if (typeof v === 'number') return String(v);
  return /[\\\n\r\t]/.test(v) ? v.replace(/[\\\n\r\t]/g, (c) => escapes[c]!) : v;
}
