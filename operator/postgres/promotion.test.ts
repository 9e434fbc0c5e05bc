import { describe, expect, it } from 'vitest';
import { effectiveSyncNumber } from './promotion.js';
import type { Cluster } from './state.js';

const cluster = (number: number, confirmed?: string): Cluster =>
  ({
    metadata: { name: 'db', namespace: 'ns' },
    spec: { instances: 4, image: 'postgres:15', synchronous: { mode: 'Quorum', number } },
    ...(confirmed !== undefined ? { status: { synchronousStandbyNames: confirmed } } : {}),
  }) as Cluster;

describe('effectiveSyncNumber: how many acknowledgements a lost primary waited for', () => {
  it('takes the lower of the spec and what the primary confirmed, in either direction of a change', () => {
    // Raised in the spec, not yet read by PostgreSQL: commits still needed only 1.
    expect(effectiveSyncNumber(cluster(2, 'ANY 1 ("db-0", "db-1", "db-2", "db-3")'))).toBe(1);
    // Lowered in the spec: the primary may already wait for fewer than it confirmed.
    expect(effectiveSyncNumber(cluster(1, 'ANY 3 ("db-0", "db-1", "db-2", "db-3")'))).toBe(1);
    expect(effectiveSyncNumber(cluster(2, 'ANY 2 ("db-0", "db-1", "db-2", "db-3")'))).toBe(2);
  });

  it('uses the spec when nothing was confirmed yet, and 0 once the primary runs asynchronously', () => {
    expect(effectiveSyncNumber(cluster(2))).toBe(2);
    expect(effectiveSyncNumber(cluster(2, ''))).toBe(0);
    expect(effectiveSyncNumber(cluster(2, 'garbage ('))).toBe(2);
  });
});
