import { describe, expect, it } from 'vitest';
import type { InstanceObservation } from './instances.js';
import type { InstanceView } from './roles.js';
import { type ScaleDownGate, type ScaleDownInput, scaleDownStep } from './scaleDown.js';

const NEW_NAMES = 'ANY 1 ("db-0", "db-1")';
const OLD_NAMES = 'ANY 1 ("db-0", "db-1", "db-2")';

const primaryAt = (
  currentLsn: string,
  syncStandbyNames: string,
  flushed: Record<string, string>,
): InstanceView => {
  const obs: InstanceObservation = {
    reachable: true,
    inRecovery: false,
    currentLsn,
    syncStandbyNames,
    standbys: Object.entries(flushed).map(([name, flushLsn]) => ({
      name,
      state: 'streaming',
      syncState: 'quorum',
      flushLsn,
    })),
  };
  return { pod: 'db-0', ordinal: 0, ready: true, running: true, labels: {}, annotations: {}, obs };
};

const input = (primary: InstanceView | undefined, gate?: ScaleDownGate): ScaleDownInput => ({
  from: 3,
  to: 2,
  names: NEW_NAMES,
  syncNumber: 1,
  primary,
  ...(gate ? { gate } : {}),
});

describe('scaleDownStep: a StatefulSet shrinks only once the staying replicas hold every acknowledged commit', () => {
  it('waits while the primary still waits for the old standbys', () => {
    const step = scaleDownStep(input(primaryAt('0/5000000', OLD_NAMES, { 'db-1': '0/5000000' })));
    expect(step.release).toBe(false);
    if (!step.release) {
      expect(step.gate.barrier).toBeUndefined();
      expect(step.waitingFor).toContain(NEW_NAMES);
    }
  });

  it('takes the barrier when the primary runs with the new names, then waits for a staying replica past it', () => {
    const first = scaleDownStep(input(primaryAt('0/5000000', NEW_NAMES, { 'db-1': '0/4000000' })));
    expect(first).toMatchObject({ release: false, gate: { to: 2, barrier: '0/5000000' } });
    const gate = (first as { gate: ScaleDownGate }).gate;

    // Only the replica that goes away is past the barrier: not enough.
    const leaving = scaleDownStep(
      input(primaryAt('0/6000000', NEW_NAMES, { 'db-1': '0/4FFFFFF', 'db-2': '0/6000000' }), gate),
    );
    expect(leaving.release).toBe(false);

    const staying = scaleDownStep(input(primaryAt('0/6000000', NEW_NAMES, { 'db-1': '0/5000000' }), gate));
    expect(staying).toEqual({ release: true });
  });

  it('waits without a primary that answers, and never for a scale-up or asynchronous replication', () => {
    expect(scaleDownStep(input(undefined)).release).toBe(false);
    expect(scaleDownStep({ ...input(undefined), from: 2, to: 3 })).toEqual({ release: true });
    const asyncPrimary = primaryAt('0/5000000', '', {});
    const first = scaleDownStep({ ...input(asyncPrimary), names: '', syncNumber: 0 });
    expect(first.release).toBe(false); // the barrier is taken first, even with nothing to wait for
    const gate = (first as { gate: ScaleDownGate }).gate;
    expect(scaleDownStep({ ...input(asyncPrimary, gate), names: '', syncNumber: 0 })).toEqual({
      release: true,
    });
  });

  it('starts again when the target changes while it waits', () => {
    const step = scaleDownStep({
      ...input(primaryAt('0/7000000', 'ANY 1 ("db-0")', { 'db-1': '0/7000000' }), {
        to: 2,
        barrier: '0/1000000',
      }),
      to: 1,
      names: 'ANY 1 ("db-0")',
      syncNumber: 0,
    });
    expect(step).toMatchObject({ release: false, gate: { to: 1, barrier: '0/7000000' } });
  });
});
