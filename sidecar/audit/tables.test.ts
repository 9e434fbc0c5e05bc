import { describe, expect, it } from 'vitest';
import { type AuditRow, decodeRecord, encodeRecord } from './tables.js';

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
    expect(decodeRecord(r)).toEqual({
      table: 'audit_security_events',
      line: r.slice(2),
      occurredAt: row.occurred_at,
    });
  });

  it('refuse a line cut short or not of this format', () => {
    const r = encodeRecord('audit_security_events', row);
    expect(() => decodeRecord(r.slice(0, r.length - 12))).toThrow('not an audit record');
    expect(() => decodeRecord('{"n":3}')).toThrow('not an audit record');
    expect(() => decodeRecord(`9\t${r.slice(2)}`)).toThrow('not an audit record');
  });
});
