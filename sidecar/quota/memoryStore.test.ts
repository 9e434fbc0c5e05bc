import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { MemoryQuotaStore } from './memoryStore.js';
import type { LimitCheck } from './store.js';

const hourly = (subject: string, requests = 2): LimitCheck => ({
  key: `nox:q:{${subject}}:p:free:hourly`,
  requests,
  windowMs: 3_600_000,
});

describe('MemoryQuotaStore', () => {
  it('keeps at most maxEntries states, dropping the least recently used', async () => {
    const registry = new Registry();
    const store = new MemoryQuotaStore({ maxEntries: 3, registry });
    const now = 1_000_000;
    for (const s of ['a', 'b', 'c']) await store.take([hourly(s)], 1, now, false);
    await store.take([hourly('a')], 1, now, false); // a is used again: b is now the oldest
    expect((await store.take([hourly('a')], 1, now, false)).allowed).toBe(false);
    await store.take([hourly('d')], 1, now, false); // drops b
    expect(store.size).toBe(3);
    // a kept its state (still over), b starts afresh (allowed twice again).
    expect((await store.take([hourly('a')], 1, now, false)).allowed).toBe(false);
    expect((await store.take([hourly('b')], 1, now, false)).limits[0]!.remaining).toBe(1);
    expect(await registry.getSingleMetricAsString('nox_quota_memory_evictions_total')).toMatch(/ 2$/m);
  });

  it('lets a state go once its window has passed, not after a year', async () => {
    const store = new MemoryQuotaStore();
    const now = 1_000_000;
    await store.take([{ key: 'k1', requests: 10, windowMs: 1000 }], 1, now, false);
    await store.take([{ key: 'k2', requests: 10, resetAt: now + 5000 }], 1, now, false);
    expect(store.size).toBe(2);
    // The sweep runs at most every 10 s; by then both states are past their expiry.
    await store.take([{ key: 'k3', requests: 10, windowMs: 1000 }], 1, now + 10_001, true);
    expect(store.size).toBe(0);
  });
});
