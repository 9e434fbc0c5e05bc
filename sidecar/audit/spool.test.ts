import { appendFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Spool, SpoolFull } from './spool.js';

const dirs: string[] = [];
const fresh = () => {
  const d = mkdtempSync(join(tmpdir(), 'nox-spool-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const records = (from: number, n: number) => Array.from({ length: n }, (_, i) => `{"n":${from + i}}`);

describe('the audit spool', () => {
  it('reads back in order across segments, from where the last commit left it, across a restart', async () => {
    const dir = fresh();
    const a = new Spool({ dir, maxBytes: 1 << 20, segmentBytes: 100 });
    for (let i = 0; i < 10; i++) await a.append(records(i * 5, 5), false);
    expect(readdirSync(dir).filter((f) => f.endsWith('.log')).length).toBeGreaterThanOrEqual(5);
    const first = a.read(12);
    expect(first.records.map(String)).toEqual(records(0, 12));
    a.commit(first.next, true);
    a.close();

    const b = new Spool({ dir, maxBytes: 1 << 20, segmentBytes: 100 });
    const rest = b.read(1000);
    expect(rest.records.map(String)).toEqual(records(12, 38));
    b.commit(rest.next, true);
    expect(b.bytes).toBe(0);
    expect(b.read(10).records).toEqual([]);
    b.close();
  });

  it('skips a record torn by a crash at the end of a segment, and counts its bytes', async () => {
    const dir = fresh();
    const a = new Spool({ dir, maxBytes: 1 << 20 });
    await a.append(records(0, 3), false);
    a.close();
    const [segment] = readdirSync(dir).filter((f) => f.endsWith('.log'));
    appendFileSync(join(dir, segment!), '{"n":3'); // the write a SIGKILL cut short
    const b = new Spool({ dir, maxBytes: 1 << 20 });
    await b.append(records(4, 1), false);
    const got = b.read(100);
    expect(got.records.map(String)).toEqual([...records(0, 3), ...records(4, 1)]);
    expect(got.tornBytes).toBe(6);
    b.close();
  });

  it('refuses what does not fit, and drops its oldest segment when asked, saying how many records went', async () => {
    const dir = fresh();
    const s = new Spool({ dir, maxBytes: 200, segmentBytes: 80 });
    await s.append(records(0, 8), false); // 8 × 9 bytes
    await s.append(records(8, 8), false); // a second segment
    await expect(s.append(records(16, 8), false)).rejects.toBeInstanceOf(SpoolFull);
    expect(s.dropOldest()).toBe(8);
    await s.append(records(16, 8), false);
    expect(s.read(100).records.map(String)).toEqual(records(8, 16));
    s.close();
  });

  it('belongs to one process at a time: a live holder refuses it, a dead one is taken over', () => {
    const dir = fresh();
    writeFileSync(join(dir, 'lock'), String(process.ppid)); // alive: the test runner's parent
    expect(() => new Spool({ dir, maxBytes: 1000 })).toThrow(/in use by process/);
    writeFileSync(join(dir, 'lock'), '2147483646'); // no such process
    const a = new Spool({ dir, maxBytes: 1000 });
    // The same process may open it again (a restarted container's PID 1).
    new Spool({ dir, maxBytes: 1000 }).close();
    a.close();
  });
});
