import { describe, expect, it } from 'vitest';
import { calendarPeriod } from './calendar.js';

const at = (iso: string) => Date.parse(iso);

describe('calendarPeriod', () => {
  it('ends a month at local midnight of the 1st, across a DST change', () => {
    // 2026-10-25: Europe/Amsterdam leaves summer time; November starts at 23:00 UTC on Oct 31.
    const p = calendarPeriod('Month', at('2026-10-20T12:00:00Z'), 'Europe/Amsterdam');
    expect(p.id).toBe('2026-10');
    expect(new Date(p.endsAt).toISOString()).toBe('2026-10-31T23:00:00.000Z');
  });

  it('puts 23:30 UTC on Dec 31 in next year for Tokyo', () => {
    expect(calendarPeriod('Year', at('2026-12-31T23:30:00Z'), 'Asia/Tokyo').id).toBe('2027');
  });

  it('starts ISO weeks on Monday', () => {
    const p = calendarPeriod('Week', at('2026-11-25T10:00:00Z'), 'UTC'); // a Wednesday
    expect(p.id).toBe('w2026-11-23');
    expect(new Date(p.endsAt).toISOString()).toBe('2026-11-30T00:00:00.000Z');
  });

  it('ends a day at the next local midnight', () => {
    const p = calendarPeriod('Day', at('2026-11-25T22:30:00Z'), 'America/New_York');
    expect(new Date(p.endsAt).toISOString()).toBe('2026-11-26T05:00:00.000Z');
  });
});
