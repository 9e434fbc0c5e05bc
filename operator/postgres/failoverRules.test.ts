import { describe, expect, it } from 'vitest';
import {
  chooseFailoverTarget,
  compareLsn,
  enoughReplicasForSafeFailover,
  fencedInstances,
  fencedInstancesPatch,
  fencingAnnotation,
  formatLsn,
  heldLsn,
  lagBytes,
  parseLsn,
  parseSynchronousNumber,
  primaryLabelPatch,
} from './failoverRules.js';

const r = (pod: string, receivedLsn?: string, replayedLsn?: string, extra = {}) => ({
  pod,
  receivedLsn,
  replayedLsn,
  ready: true,
  fenced: false,
  ...extra,
});

describe('LSNs', () => {
  it('parse as 64-bit positions from "X/Y" hex', () => {
    expect(parseLsn('0/0')).toBe(0n);
    expect(parseLsn('16/B374D848')).toBe((0x16n << 32n) | 0xb374d848n);
    expect(parseLsn('FFFFFFFF/FFFFFFFF')).toBe(0xffffffffffffffffn);
    expect(formatLsn(parseLsn('16/b374d848')!)).toBe('16/B374D848');
    for (const bad of ['', '16', '16/', '/1', 'G/1', '1/2/3', '123456789/0', undefined, null])
      expect(parseLsn(bad as string)).toBeUndefined();
  });

  it('compare by the high word first, not as strings', () => {
    expect(compareLsn('1/0', '0/FFFFFFFF')).toBe(1);
    expect(compareLsn('0/A', '0/9')).toBe(1);
    expect(compareLsn('2/10', '10/2')).toBe(-1);
    expect(compareLsn('0/1', '0/01')).toBe(0);
    expect(compareLsn('junk', '0/0')).toBe(-1);
    expect(compareLsn('junk', undefined)).toBe(0);
  });

  it('give lag in bytes', () => {
    expect(lagBytes('1/0', '0/FFFFFF00')).toBe(256);
    expect(lagBytes('0/10', '0/20')).toBe(0);
    expect(lagBytes('0/10', 'x')).toBeUndefined();
  });
});

describe('chooseFailoverTarget', () => {
  it('picks the most advanced received position, across the 32-bit boundary', () => {
    expect(chooseFailoverTarget([r('pg-1', '0/FFFFFFFF', '0/FFFFFFFF'), r('pg-2', '1/0', '0/0')])?.pod).toBe(
      'pg-2',
    );
  });

  it('breaks a received tie by replayed position', () => {
    expect(chooseFailoverTarget([r('pg-1', '0/500', '0/100'), r('pg-2', '0/500', '0/400')])?.pod).toBe(
      'pg-2',
    );
  });

  it('breaks a full tie by the lowest ordinal, numerically', () => {
    expect(
      chooseFailoverTarget([r('pg-10', '0/5', '0/5'), r('pg-2', '0/5', '0/5'), r('pg-3', '0/5', '0/5')])?.pod,
    ).toBe('pg-2');
    const tie = [r('pg-1', '0/5', '0/5'), r('pg-0', '0/5', '0/5')];
    expect(chooseFailoverTarget(tie)?.pod).toBe(chooseFailoverTarget([...tie].reverse())?.pod);
  });

  it('never picks a replica none of whose positions can be read', () => {
    expect(chooseFailoverTarget([r('pg-1', 'garbage', 'junk'), r('pg-2', '0/1', '0/1')])?.pod).toBe('pg-2');
    expect(chooseFailoverTarget([r('pg-1', undefined), r('pg-2', '')])).toBeUndefined();
  });

  it('ranks by the WAL a replica holds, not by its received position alone (cc25)', () => {
    // Restarted replicas: pg_last_wal_receive_lsn() is the segment start streaming resumes
    // from, or NULL until it asks for a stream; what they replayed from disk is what they hold.
    const restarted = [r('db-0', '0/7000000', '0/7AF8E10'), r('db-2', '0/6000000', '0/7C4AAC8')];
    expect(chooseFailoverTarget(restarted)?.pod).toBe('db-2');
    expect(
      chooseFailoverTarget([r('db-0', '0/7000000', '0/7AF8E10'), r('db-2', undefined, '0/7C4AAC8')])?.pod,
    ).toBe('db-2');
    // Streaming: received WAL is held (flushed) though not yet replayed.
    expect(chooseFailoverTarget([r('db-0', '0/9000', '0/1000'), r('db-2', '0/8000', '0/8000')])?.pod).toBe(
      'db-0',
    );
    expect(heldLsn({ receivedLsn: '0/7000000', replayedLsn: '0/7AF8E10' })).toBe('0/7AF8E10');
    expect(heldLsn({ receivedLsn: '0/9000', replayedLsn: '0/1000' })).toBe('0/9000');
    expect(heldLsn({ receivedLsn: 'x' })).toBeUndefined();
  });

  it('ranks an unparseable replayed LSN lowest within a received tie', () => {
    expect(chooseFailoverTarget([r('pg-1', '0/9', 'x'), r('pg-2', '0/9', '0/1')])?.pod).toBe('pg-2');
    expect(chooseFailoverTarget([r('pg-1', '0/9', undefined), r('pg-2', '0/8', '0/8')])?.pod).toBe('pg-1');
  });

  it('skips replicas that are not ready or fenced', () => {
    expect(
      chooseFailoverTarget([
        r('pg-1', '0/9', '0/9', { ready: false }),
        r('pg-0', '0/A', '0/A', { fenced: true }),
        r('pg-2', '0/1', '0/1'),
      ])?.pod,
    ).toBe('pg-2');
    expect(chooseFailoverTarget([])).toBeUndefined();
  });

  it('returns the caller’s own object', () => {
    const a = { ...r('pg-1', '0/1', '0/1'), note: 'x' };
    expect(chooseFailoverTarget([a])).toBe(a);
  });
});

describe('failover guards', () => {
  it('needs enough readable replicas to be sure of every acknowledged commit', () => {
    expect(enoughReplicasForSafeFailover(1, 2, 1)).toBe(false);
    expect(enoughReplicasForSafeFailover(2, 2, 1)).toBe(true);
    expect(enoughReplicasForSafeFailover(1, 2, 2)).toBe(true);
    expect(enoughReplicasForSafeFailover(1, 4, 0)).toBe(true);
    expect(enoughReplicasForSafeFailover(0, 2, 0)).toBe(false);
  });

  it('reads how many standbys a primary waits for from synchronous_standby_names', () => {
    expect(parseSynchronousNumber('')).toBe(0);
    expect(parseSynchronousNumber('ANY 2 ("db-0", "db-1", "db-2")')).toBe(2);
    expect(parseSynchronousNumber('FIRST 1 (a, b)')).toBe(1);
    expect(parseSynchronousNumber('first 3(a,b,c)')).toBe(3);
    expect(parseSynchronousNumber('2 (a, b)')).toBe(2);
    expect(parseSynchronousNumber('a, b')).toBe(1);
    expect(parseSynchronousNumber('*')).toBe(1);
    expect(parseSynchronousNumber('ANY x (a)')).toBeUndefined();
    expect(parseSynchronousNumber(undefined)).toBeUndefined();
  });
});

describe('pod patches', () => {
  it('set the role label, or nothing when it is already set', () => {
    expect(primaryLabelPatch({ metadata: { labels: { 'nox.dev/role': 'replica' } } }, 'primary')).toEqual({
      metadata: { labels: { 'nox.dev/role': 'primary' } },
    });
    expect(
      primaryLabelPatch({ metadata: { labels: { 'nox.dev/role': 'primary' } } }, 'primary'),
    ).toBeUndefined();
    expect(primaryLabelPatch({}, 'replica')).toEqual({ metadata: { labels: { 'nox.dev/role': 'replica' } } });
  });

  it('fence a pod out of both Services, and unfence it', () => {
    expect(fencingAnnotation({ metadata: { labels: { 'nox.dev/role': 'primary' } } }, true)).toEqual({
      metadata: { annotations: { 'nox.dev/fenced': 'true' }, labels: { 'nox.dev/role': 'fenced' } },
    });
    const fenced = {
      metadata: { labels: { 'nox.dev/role': 'fenced' }, annotations: { 'nox.dev/fenced': 'true' } },
    };
    expect(fencingAnnotation(fenced, true)).toBeUndefined();
    expect(fencingAnnotation(fenced, false)).toEqual({
      metadata: { annotations: { 'nox.dev/fenced': null } },
    });
    expect(fencingAnnotation({}, false)).toBeUndefined();
  });

  it('record fenced instances on the cluster durably', () => {
    expect(fencedInstancesPatch(['pg-1', 'pg-0', 'pg-1'])).toEqual({
      metadata: { annotations: { 'nox.dev/fenced-instances': '["pg-0","pg-1"]' } },
    });
    expect(fencedInstancesPatch([])).toEqual({
      metadata: { annotations: { 'nox.dev/fenced-instances': null } },
    });
    expect(fencedInstances({ 'nox.dev/fenced-instances': '["pg-1",3,"pg-0"]' })).toEqual(['pg-0', 'pg-1']);
    expect(fencedInstances({ 'nox.dev/fenced-instances': '{not json' })).toEqual([]);
    expect(fencedInstances(undefined)).toEqual([]);
  });
});
