import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { checkContext, checkInput, emptySnapshot } from '../../test/harness/checks.js';
import type { Outcome } from '../request/outcome.js';
import { Pipeline } from './pipeline.js';
import type { Stage } from './stage.js';

const log = createLogger('test', { level: 'silent' });
const input = checkInput();
const ctx = checkContext({ decisionId: 'd1', snapshot: emptySnapshot(7) });
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

  describe('response phase', () => {
    const deny = (code: 'ACCESS_DENIED' | 'QUOTA_EXCEEDED'): Stage =>
      stage(code, () => ({ kind: 'deny', deny: { code, reason: 'no' } }));
    const responder = (respond: NonNullable<Stage['respond']>): Stage => ({
      name: 'responder',
      run: () => ({ kind: 'skip' }),
      respond,
    });

    it('sees the deny that ended the check, and may replace it', async () => {
      const seen: (string | undefined)[] = [];
      const d = await run(
        responder((_i, _c, denied) => {
          seen.push(denied?.code);
          return denied?.code === 'ACCESS_DENIED'
            ? { kind: 'deny', deny: { code: 'UNAUTHENTICATED', reason: 'log in' } }
            : undefined;
        }),
        deny('ACCESS_DENIED'),
      );
      expect(seen).toEqual(['ACCESS_DENIED']);
      expect(!d.allowed && d.deny.code).toBe('UNAUTHENTICATED');
      const kept = await run(
        responder(() => undefined),
        deny('QUOTA_EXCEEDED'),
      );
      expect(!kept.allowed && kept.deny.code).toBe('QUOTA_EXCEEDED');
    });

    it('adds its headers to an allow, after every stage ran', async () => {
      const d = await run(
        responder((_i, _c, denied) =>
          denied ? undefined : { kind: 'continue', responseHeaders: { 'set-cookie': 'x=; Max-Age=0' } },
        ),
        stage('b', () => ({ kind: 'continue', upstreamHeaders: { 'x-b': '1' } })),
      );
      expect(d.allowed && d.allow.responseHeaders).toEqual({ 'set-cookie': 'x=; Max-Age=0' });
      expect(d.allowed && d.allow.upstreamHeaders['x-b']).toBe('1');
    });

    it('fails closed when a response phase throws or reports an error', async () => {
      for (const r of [
        responder(() => {
          throw new Error('boom');
        }),
        responder(() =>
          Promise.resolve({ kind: 'error', code: 'IDENTITY_PROVIDER_UNAVAILABLE', cause: 'x' }),
        ),
      ]) {
        const d = await run(r);
        expect(d.allowed).toBe(false);
      }
    });
  });
  it('runs nothing after the deadline: the stage after a slow one neither runs nor responds', async () => {
    const abort = new AbortController();
    const ran: string[] = [];
    const slow = stage('slow', async () => {
      abort.abort(); // the checker's deadline fires while this stage waits on a dependency
      return { kind: 'continue' };
    });
    const charge: Stage = {
      name: 'charge',
      run: () => {
        ran.push('run');
        return { kind: 'continue' };
      },
      respond: () => {
        ran.push('respond');
        return undefined;
      },
    };
    const d = await new Pipeline([slow, charge], log, new Registry()).run(
      input,
      checkContext({ decisionId: 'd2', snapshot: emptySnapshot(7), signal: abort.signal }),
    );
    expect(d.allowed).toBe(false);
    if (!d.allowed)
      expect(d.deny).toMatchObject({
        code: 'DEADLINE_EXCEEDED',
        reason: expect.stringContaining('before stage charge'),
      });
    expect(ran).toEqual([]);
  });
});
