import { describe, expect, it } from 'vitest';
import { type AuditRow, copyData, decodeRecord, encodeRecord, isoTime, occurredAt } from './tables.js';

const row: AuditRow<'audit_security_events'> = {
  id: '7b0c5d2e-1111-4a4a-9a9a-222233334444',
  occurred_at: '2030-01-01T00:00:00.000Z',
  sidecar: 'pod-0',
  kind: 'bad_token',
  reason: 'tab\there, line\nbreak, back\\slash',
  provider: null,
  subject: null,
  source_ip: '203.0.113.9',
  detail: '{"n":1}',
};

describe('audit spool records', () => {
  it('are one line in COPY text format: escapes, \\N for null, the table first', () => {
    const r = encodeRecord('audit_security_events', row);
    expect(r).not.toContain('\n');
    expect(r.split('\t')).toEqual([
      '2',
      row.id,
      row.occurred_at,
      'pod-0',
      'bad_token',
      'tab\\there, line\\nbreak, back\\\\slash',
      '\\N',
      '\\N',
      '203.0.113.9',
      '{"n":1}',
    ]);
    const decoded = decodeRecord(Buffer.from(r));
    expect(decoded?.table).toBe('audit_security_events');
    expect(decoded?.line.toString()).toBe(r.slice(2));
    expect(occurredAt(decoded!.line)).toBe(Date.parse(String(row.occurred_at)));
  });

  it('name their table: a line that does not is foreign', () => {
    const r = encodeRecord('audit_security_events', row);
    expect(decodeRecord(Buffer.from(`9\t${r.slice(2)}`))).toBeUndefined();
    expect(decodeRecord(Buffer.from('{"n":3}'))).toBeUndefined();
    expect(decodeRecord(Buffer.from(''))).toBeUndefined();
  });

  it('go to COPY one per line', () => {
    expect(copyData([Buffer.from('a\tb'), Buffer.from('c')]).toString()).toBe('a\tb\nc\n');
  });
});

describe('isoTime', () => {
  it('is toISOString, also across seconds and for every width of milliseconds', () => {
    const base = Date.parse('2030-12-31T23:59:58.000Z');
    for (const ms of [0, 1, 9, 10, 99, 100, 999, 1000, 1005, 1999.7, 2000, 2001, 86_400_000 + 42]) {
      expect(isoTime(base + ms)).toBe(new Date(base + ms).toISOString());
    }
    expect(isoTime(base)).toBe(new Date(base).toISOString()); // back to an earlier second
  });
});
