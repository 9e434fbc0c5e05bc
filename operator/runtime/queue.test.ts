import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WorkQueue } from './queue.js';

describe('WorkQueue', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('hands out a key added several times once', async () => {
    const q = new WorkQueue();
    q.add('a');
    q.add('b');
    q.add('a');
    expect(q.length).toBe(2);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
    expect(q.length).toBe(0);
  });

  it('never hands out a key that is being processed; re-adds it after done()', async () => {
    const q = new WorkQueue();
    q.add('a');
    expect(await q.get()).toBe('a');
    q.add('a'); // changed while processing
    q.add('a');
    expect(q.length).toBe(0);
    let second: string | undefined;
    void q.get().then((k) => {
      second = k;
    });
    await Promise.resolve();
    expect(second).toBeUndefined();
    q.done('a');
    await Promise.resolve();
    expect(second).toBe('a');
    q.done('a');
    expect(q.length).toBe(0);
  });

  it('gives a waiting worker a key as soon as it is added', async () => {
    const q = new WorkQueue();
    const got = q.get();
    q.add('x');
    expect(await got).toBe('x');
  });

  it('backs a failing key off exponentially up to the cap, and forget() resets it', () => {
    const q = new WorkQueue({ baseDelayMs: 100, maxDelayMs: 1000, qps: 1000, burst: 1000 });
    const delays = Array.from({ length: 6 }, () => q.addRateLimited('k'));
    expect(delays).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(q.failures('k')).toBe(6);
    q.forget('k');
    expect(q.addRateLimited('k')).toBe(100);
    // another key has its own count
    expect(q.addRateLimited('other')).toBe(100);
  });

  it('adds a rate-limited key only after its delay', async () => {
    const q = new WorkQueue({ baseDelayMs: 100, maxDelayMs: 1000 });
    q.addRateLimited('k');
    expect(q.length).toBe(0);
    vi.advanceTimersByTime(99);
    expect(q.length).toBe(0);
    vi.advanceTimersByTime(1);
    expect(q.length).toBe(1);
    expect(await q.get()).toBe('k');
  });

  it('limits retries of all keys together with a token bucket', () => {
    const q = new WorkQueue({ baseDelayMs: 1, maxDelayMs: 10, qps: 2, burst: 2 });
    expect(q.addRateLimited('a')).toBe(1);
    expect(q.addRateLimited('b')).toBe(1);
    // the bucket is empty: the third retry waits for a token (500 ms at 2/s)
    expect(q.addRateLimited('c')).toBe(500);
    expect(q.addRateLimited('d')).toBe(1000);
  });

  it('keeps the earliest of several delayed adds of one key', () => {
    const q = new WorkQueue();
    q.addAfter('k', 1000);
    q.addAfter('k', 300);
    q.addAfter('k', 5000);
    vi.advanceTimersByTime(300);
    expect(q.length).toBe(1);
    expect(q.delayed).toBe(0);
  });

  it('an immediate add does not wait for a pending delayed one', async () => {
    const q = new WorkQueue();
    q.addAfter('k', 10_000);
    q.add('k');
    expect(await q.get()).toBe('k');
  });

  it('shutDown() answers waiting workers with undefined and drops delayed keys', async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.addAfter('later', 100);
    q.shutDown();
    expect(await waiting).toBeUndefined();
    expect(await q.get()).toBeUndefined();
    vi.advanceTimersByTime(200);
    expect(q.length).toBe(0);
    q.add('x');
    expect(q.length).toBe(0);
  });

  it('drained() waits for keys in flight', async () => {
    const q = new WorkQueue();
    q.add('a');
    await q.get();
    let drained = false;
    void q.drained().then(() => {
      drained = true;
    });
    q.shutDown();
    await Promise.resolve();
    expect(drained).toBe(false);
    q.done('a');
    await Promise.resolve();
    expect(drained).toBe(true);
  });

  it('reports its depth', () => {
    const depths: number[] = [];
    const q = new WorkQueue({ onDepth: (n) => depths.push(n) });
    q.add('a');
    q.add('b');
    void q.get();
    expect(depths).toEqual([1, 2, 1]);
  });
});

describe('WorkQueue under random workloads', () => {
  it('never runs one key twice at once, and runs every key after its last add', async () => {
    const op = fc.oneof(
      fc.record({ t: fc.constant('add' as const), key: fc.constantFrom('a', 'b', 'c', 'd') }),
      fc.record({ t: fc.constant('finish' as const), worker: fc.nat(2) }),
      fc.record({ t: fc.constant('take' as const), worker: fc.nat(2) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
        const q = new WorkQueue();
        const busy: (string | undefined)[] = [undefined, undefined, undefined];
        const lastAdd = new Map<string, number>();
        const lastStart = new Map<string, number>();
        let clock = 0;
        const take = async (w: number) => {
          if (busy[w] !== undefined || q.length === 0) return;
          const key = (await q.get()) as string;
          expect(busy.includes(key), `key ${key} handed to two workers`).toBe(false);
          busy[w] = key;
          lastStart.set(key, ++clock);
        };
        for (const o of ops) {
          if (o.t === 'add') {
            q.add(o.key);
            lastAdd.set(o.key, ++clock);
          } else if (o.t === 'take') await take(o.worker);
          else {
            const key = busy[o.worker];
            if (key !== undefined) {
              busy[o.worker] = undefined;
              q.done(key);
            }
          }
        }
        // Drain: finish everything, keep taking until empty.
        for (let round = 0; round < 20; round++) {
          for (let w = 0; w < 3; w++) {
            const key = busy[w];
            if (key !== undefined) {
              busy[w] = undefined;
              q.done(key);
            }
          }
          for (let w = 0; w < 3; w++) await take(w);
        }
        for (const [key, at] of lastAdd) {
          expect(lastStart.get(key) ?? 0, `key ${key} not run after its last add`).toBeGreaterThan(at);
        }
      }),
      { numRuns: 300 },
    );
  });
});
