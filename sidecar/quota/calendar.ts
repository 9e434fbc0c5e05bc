import type { Calendar } from '../policy/quotaPolicy.js';

const formatters = new Map<string, Intl.DateTimeFormat>();

function parts(
  ms: number,
  timeZone: string,
): { y: number; mo: number; d: number; h: number; mi: number; s: number; wd: number } {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
      weekday: 'short',
    });
    formatters.set(timeZone, f);
  }
  const p: Record<string, string> = {};
  for (const x of f.formatToParts(ms)) p[x.type] = x.value;
  const wd = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'].indexOf(p.weekday!);
  return { y: +p.year!, mo: +p.month!, d: +p.day!, h: +p.hour!, mi: +p.minute!, s: +p.second!, wd };
}

/** The instant at which the wall clock in `timeZone` reads y-mo-d 00:00 (DST-aware). */
function midnight(y: number, mo: number, d: number, timeZone: string): number {
  let guess = Date.UTC(y, mo - 1, d);
  for (let i = 0; i < 3; i++) {
    const p = parts(guess, timeZone);
    const wall = Date.UTC(p.y, p.mo - 1, p.d, p.h, p.mi, p.s);
    const target = Date.UTC(y, mo - 1, d);
    if (wall === target) break;
    guess += target - wall;
  }
  return guess;
}

/** The current calendar period containing `now`: an id for keys and the instant it ends. */
export function calendarPeriod(
  calendar: Calendar,
  now: number,
  timeZone: string,
): { id: string; endsAt: number } {
  const p = parts(now, timeZone);
  switch (calendar) {
    case 'Day': {
      const next = new Date(Date.UTC(p.y, p.mo - 1, p.d + 1));
      return {
        id: `${p.y}-${p.mo}-${p.d}`,
        endsAt: midnight(next.getUTCFullYear(), next.getUTCMonth() + 1, next.getUTCDate(), timeZone),
      };
    }
    case 'Week': {
      // ISO weeks start on Monday.
      const monday = new Date(Date.UTC(p.y, p.mo - 1, p.d - p.wd));
      const next = new Date(Date.UTC(p.y, p.mo - 1, p.d - p.wd + 7));
      return {
        id: `w${monday.getUTCFullYear()}-${monday.getUTCMonth() + 1}-${monday.getUTCDate()}`,
        endsAt: midnight(next.getUTCFullYear(), next.getUTCMonth() + 1, next.getUTCDate(), timeZone),
      };
    }
    case 'Month': {
      const ny = p.mo === 12 ? p.y + 1 : p.y;
      const nm = p.mo === 12 ? 1 : p.mo + 1;
      return { id: `${p.y}-${p.mo}`, endsAt: midnight(ny, nm, 1, timeZone) };
    }
    case 'Year':
      return { id: `${p.y}`, endsAt: midnight(p.y + 1, 1, 1, timeZone) };
  }
}
