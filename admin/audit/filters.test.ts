import { describe, expect, it } from 'vitest';
import { whereClause, window } from './filters.js';

describe('audit filters', () => {
  const now = new Date('2030-05-01T12:00:00Z');

  it('reads the last day by default, and takes from/to as given', () => {
    expect(window({}, now)).toEqual({ from: new Date('2030-04-30T12:00:00Z'), to: now });
    expect(window({ from: '2030-01-01T00:00:00Z', to: '2030-01-02T00:00:00Z' }, now)).toEqual({
      from: new Date('2030-01-01T00:00:00Z'),
      to: new Date('2030-01-02T00:00:00Z'),
    });
  });

  it('puts every value in a parameter, numbered from where the caller starts', () => {
    const w = whereClause({ subject: "corp:o'brien", decision: 'deny', host: 'a.example' }, 3, now);
    expect(w.sql).toBe(
      'WHERE occurred_at >= $3 AND occurred_at < $4 AND subject = $5 AND decision = $6 AND host = $7',
    );
    expect(w.params.slice(2)).toEqual(["corp:o'brien", 'deny', 'a.example']);
  });

  it('matches a path prefix literally: its own % and _ are not wildcards', () => {
    const w = whereClause({ pathPrefix: '/a_b%c\\' }, 1, now);
    expect(w.sql).toContain('path LIKE $3');
    expect(w.params[2]).toBe('/a\\_b\\%c\\\\%');
  });
});
