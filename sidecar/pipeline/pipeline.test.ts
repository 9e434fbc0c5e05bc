import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { compileSnapshot } from '../policy/compile.js';
import { Pipeline } from './pipeline.js';
import type { CheckInput, Ctx, Outcome, Stage } from './types.js';

const log = createLogger('test', { level: 'silent' });
const input: CheckInput = {
  method: 'GET',
  host: 'h',
  path: '/',
  query: '',
  scheme: 'http',
  protocol: 'HTTP/1.1',
  headers: {},
  sourceAddress: '',
  requestId: '',
};
const ctx: Ctx = {
  decisionId: 'd1',
  snapshot: compileSnapshot({ resources: [], problems: [] }, undefined, 7),
  signal: new AbortController().signal,
  now: Date.now(),
};
const stage = (name: string, run: Stage['run']): Stage => ({ name, run });
const run = (...stages: Stage[]) => new Pipeline(stages, log, new Registry()).run(input, ctx);

describe('Pipeline', () => {
  it('allows only when every stage continues or skips, and records the snapshot version', async () => {
    const d = await run(
      stage('a', () => ({ kind: 'skip' })),
      stage('b', () => ({ kind: 'continue', upstreamHeaders: { 'x-b': '1' } })),
    );
    expect(d.allowed).toBe(true);
    expect(d.snapshotVersion).toBe(7);
    if (d.allowed)
      expect(d.allow.upstreamHeaders).toMatchObject({
        'x-b': '1',
        'x-nox-snapshot': '7',
        'x-nox-decision-id': 'd1',
      });
  });

  it('stops at the first deny', async () => {
    let reached = false;
    const d = await run(
      stage('a', () => ({ kind: 'deny', deny: { code: 'ACCESS_DENIED', reason: 'no' } })),
      stage('b', () => {
        reached = true;
        return { kind: 'continue' };
      }),
    );
    expect(d.allowed).toBe(false);
    expect(reached).toBe(false);
  });

  it('fails closed when a stage throws, rejects, or reports an error', async () => {
    for (const s of [
      stage('throws', () => {
        throw new Error('boom');
      }),
      stage('rejects', () => Promise.reject(new Error('boom'))),
      stage('errors', () => ({ kind: 'error', code: 'INTERNAL', cause: 'x' })),
    ]) {
      const d = await run(s);
      expect(d.allowed, s.name).toBe(false);
      if (!d.allowed) expect(d.deny.code).toBe('INTERNAL');
    }
  });

  it('lets an error pass only when the stage declares fail-open', async () => {
    const d = await run(
      stage('open', () => ({ kind: 'error', code: 'INTERNAL', cause: 'x', failOpen: true })),
    );
    expect(d.allowed).toBe(true);
  });

  it('denies on an outcome outside the closed set', async () => {
    const d = await run(stage('weird', () => ({ kind: 'allow' }) as unknown as Outcome));
    expect(d.allowed).toBe(false);
  });
});
