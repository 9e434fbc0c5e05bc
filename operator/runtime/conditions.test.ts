import { describe, expect, it } from 'vitest';
import { sameConditions, setCondition } from './conditions.js';

const t0 = new Date('2026-01-01T10:00:00.123Z');
const t1 = new Date('2026-01-01T10:05:00Z');

describe('setCondition', () => {
  it('adds a condition with a transition time in Kubernetes form', () => {
    const list = setCondition(
      [],
      { type: 'Ready', status: 'False', reason: 'SecretNotFound', message: 'm', observedGeneration: 1 },
      t0,
    );
    expect(list).toEqual([
      {
        type: 'Ready',
        status: 'False',
        reason: 'SecretNotFound',
        message: 'm',
        observedGeneration: 1,
        lastTransitionTime: '2026-01-01T10:00:00Z',
      },
    ]);
  });

  it('keeps lastTransitionTime while the status stays, even if reason, message or generation change', () => {
    const a = setCondition(
      [],
      { type: 'Ready', status: 'False', reason: 'SecretNotFound', message: 'm', observedGeneration: 1 },
      t0,
    );
    const b = setCondition(
      a,
      { type: 'Ready', status: 'False', reason: 'SecretKeyNotFound', message: 'n', observedGeneration: 2 },
      t1,
    );
    expect(b[0]).toMatchObject({
      reason: 'SecretKeyNotFound',
      message: 'n',
      observedGeneration: 2,
      lastTransitionTime: '2026-01-01T10:00:00Z',
    });
  });

  it('moves lastTransitionTime when the status changes', () => {
    const a = setCondition(
      [],
      { type: 'Ready', status: 'False', reason: 'ReplicaNotStreaming', message: '' },
      t0,
    );
    const b = setCondition(a, { type: 'Ready', status: 'True', reason: 'Ready', message: '' }, t1);
    expect(b[0]?.lastTransitionTime).toBe('2026-01-01T10:05:00Z');
  });

  it('leaves other conditions and the input alone', () => {
    const input = [
      { type: 'Accepted', status: 'True' as const, reason: 'Valid', message: '' },
      {
        type: 'Ready',
        status: 'False' as const,
        reason: 'ReplicaNotStreaming',
        message: '',
        lastTransitionTime: '2025-01-01T00:00:00Z',
      },
    ];
    const out = setCondition(input, { type: 'Ready', status: 'True', reason: 'Ready', message: '' }, t1);
    expect(out[0]).toBe(input[0]);
    expect(input[1]?.status).toBe('False');
    expect(out.map((c) => c.type)).toEqual(['Accepted', 'Ready']);
  });

  it('bounds the message to what the API server accepts', () => {
    const out = setCondition(
      [],
      { type: 'Ready', status: 'False', reason: 'ReplicaNotStreaming', message: 'x'.repeat(40_000) },
      t0,
    );
    expect(out[0]?.message?.length).toBe(32_768);
  });

  it('sameConditions compares content', () => {
    const a = setCondition(
      [],
      { type: 'Ready', status: 'True', reason: 'Ready', message: 'ok', observedGeneration: 3 },
      t0,
    );
    expect(
      sameConditions(
        a,
        setCondition(
          a,
          { type: 'Ready', status: 'True', reason: 'Ready', message: 'ok', observedGeneration: 3 },
          t1,
        ),
      ),
    ).toBe(true);
    expect(
      sameConditions(
        a,
        setCondition(
          a,
          { type: 'Ready', status: 'True', reason: 'Ready', message: 'ok', observedGeneration: 4 },
          t1,
        ),
      ),
    ).toBe(false);
  });
});
