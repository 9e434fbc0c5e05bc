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
    'risk_model',
    'risk_action',
    'risk_features',
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
 * A spool record: the table's index in AUDIT_TABLE_NAMES (one digit), a tab, then the row in
 * PostgreSQL's COPY text format (tab-separated, \N for null, backslash escapes), so that the
 * shipper sends it to COPY as it is, without decoding it, and a record never holds a raw line
 * break.
 */
export function encodeRecord<T extends AuditTable>(table: T, row: AuditRow<T>): string {
  return (encoders[table] as Encoder<T>)(row, copyText);
}

type Encoder<T extends AuditTable> = (row: AuditRow<T>, text: typeof copyText) => string;

/**
 * One encoder per table, made from its column list when the module loads, that reads each
 * column by its name (`row.id`, `row.occurred_at`...): each read site sees one row shape.
 * A loop over the column names reads them all at one site, which V8 serves only through its
 * megamorphic cache: a probe per column, and often a miss into the runtime.
 */
const encoders = Object.fromEntries(
  AUDIT_TABLE_NAMES.map((table, index) => {
    const cols = AUDIT_TABLES[table] as readonly string[];
    for (const c of cols) if (!/^[a-z_]+$/.test(c)) throw new Error(`audit column name ${c}`);
    const body = `return '${index}' + ${cols.map((c) => `'\\t' + text(row.${c})`).join(' + ')};`;
    // The body is made of the constant column names above, checked to be plain identifiers.
    return [table, new Function('row', 'text', body)];
  }),
) as { [T in AuditTable]: Encoder<T> };

if (AUDIT_TABLE_NAMES.length > 10) throw new Error('a spool record names its table in one digit');

/**
 * The table of a record read from the spool (a Buffer, without its newline) and its COPY line;
 * undefined for one that does not start with a table's index and a tab (a foreign line). A
 * line of the wrong shape (cut short, a column too many) is left to PostgreSQL, whose COPY
 * refuses it (SQLSTATE 22P04): the shipper then sends the batch's records one by one and
 * drops that one, counted and logged.
 */
export function decodeRecord(record: Buffer): { table: AuditTable; line: Buffer } | undefined {
  const table = record[1] === 9 ? AUDIT_TABLE_NAMES[record[0]! - 48] : undefined;
  return table ? { table, line: record.subarray(2) } : undefined;
}

/** The occurred_at of a COPY line (every table's second column), as ms since the epoch. */
export function occurredAt(line: Buffer): number {
  const first = line.indexOf(9);
  return Date.parse(line.toString('latin1', first + 1, line.indexOf(9, first + 1)));
}

/** COPY's input: the lines, each with its newline. */
export function copyData(lines: readonly Buffer[]): Buffer {
  let size = 0;
  for (const l of lines) size += l.length + 1;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const l of lines) {
    at += l.copy(out, at);
    out[at++] = 10;
  }
  return out;
}

const escapes: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** A value in COPY's text format. */
function copyText(v: Value | undefined): string {
  if (v === null || v === undefined) return '\\N';
  if (typeof v === 'number') return String(v);
  return /[\\\n\r\t]/.test(v) ? v.replace(/[\\\n\r\t]/g, (c) => escapes[c]!) : v;
}

let isoSecond = Number.NaN;
let isoPrefix = '';
/**
 * `new Date(ms).toISOString()`, with the part up to the second kept from the last call: V8
 * formats a date through vsnprintf, some 4 000 instructions, for every event otherwise.
 */
export function isoTime(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== isoSecond) {
    isoSecond = second;
    isoPrefix = new Date(second * 1000).toISOString().slice(0, 20); // 2030-01-01T00:00:00.
  }
  const milli = Math.floor(ms) - second * 1000;
  return `${isoPrefix}${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}Z`;
}
