import { describe, expect, it } from 'vitest';
import { type InstanceObservation, parseTimelineHistory } from './instances.js';
import { strandedBy } from './rejoin.js';

// Timeline 3's history: 1 ended at 0/3000000, 2 at 0/5000000.
const primary: InstanceObservation = {
  reachable: true,
  inRecovery: false,
  timeline: 3,
  currentLsn: '0/6000000',
  forks: parseTimelineHistory(
    '1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n',
  ),
};
const replica = (timeline: number, replayedLsn: string, extra: Partial<InstanceObservation> = {}) => ({
  reachable: true,
  inRecovery: true,
  timeline,
  replayedLsn,
  ...extra,
});

describe('strandedBy: a replica that cannot follow the primary onto its timeline', () => {
  it('reads a timeline history file', () => {
    expect(primary.forks).toEqual([
      { timeline: 1, endLsn: '0/3000000' },
      { timeline: 2, endLsn: '0/5000000' },
    ]);
  });

  it('is one past the end of its timeline, by what it received or replayed', () => {
    expect(strandedBy(replica(2, '0/5000001'), primary)).toMatch(/ended at 0\/5000000/);
    expect(strandedBy(replica(2, '0/4000000', { receivedLsn: '0/5A00000' }), primary)).toMatch(/0\/5A00000/);
    expect(strandedBy(replica(1, '0/3000100'), primary)).toBeDefined();
  });

  it('is one on a timeline outside the primary’s history', () => {
    const other = { ...primary, timeline: 5 };
    expect(strandedBy(replica(4, '0/1000000'), other)).toMatch(/not in the primary's history/);
  });

  it('is not a replica only late on an earlier timeline, one streaming, or one the primary’s history was not read for', () => {
    expect(strandedBy(replica(2, '0/5000000'), primary)).toBeUndefined();
    expect(strandedBy(replica(2, '0/5000001', { walReceiver: 'streaming' }), primary)).toBeUndefined();
    expect(strandedBy(replica(3, '0/7000000'), primary)).toBeUndefined();
    const { forks: _, ...unread } = primary;
    expect(strandedBy(replica(2, '0/5000001'), unread)).toBeUndefined();
  });
});
