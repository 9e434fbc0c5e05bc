import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import type { ICheckRequest } from '../../proto/envoy.js';
import { Pipeline } from '../pipeline/pipeline.js';
import type { Stage } from '../pipeline/stage.js';
import { PolicyStore } from '../policy/store.js';
import { Checker } from './checker.js';

const log = createLogger('test', { level: 'silent' });
const req: ICheckRequest = { attributes: { request: { http: { method: 'GET', host: 'h', path: '/p' } } } };

function checker(stage: Stage, deadlineMs = 50): Checker {
  const registry = new Registry();
  const policy = new PolicyStore(log, registry);
  policy.apply({ resources: [], problems: [] });
  return new Checker(new Pipeline([stage], log, registry), policy, deadlineMs, log, registry);
}
const errorOf = (res: { deniedResponse?: { body?: string | null } | null }) =>
  JSON.parse(res.deniedResponse?.body ?? '{}').error as string | undefined;

describe('Checker', () => {
  it('answers DEADLINE_EXCEEDED within the deadline when a stage hangs, and aborts its signal', async () => {
    let aborted = false;
    const c = checker({
      name: 'hangs',
      run: (_i, ctx) =>
        new Promise(() => {
          ctx.signal.addEventListener('abort', () => {
            aborted = true;
          });
        }),
    });
    const t0 = performance.now();
    const res = await c.check(req);
    const took = performance.now() - t0;
    expect(errorOf(res)).toBe('DEADLINE_EXCEEDED');
    expect(res.deniedResponse?.status?.code).toBe(503);
    expect(took).toBeLessThan(500);
    expect(aborted).toBe(true);
  });

  it('drains: checks in flight and arriving finish with their real decision; after stop they are refused', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const c = checker(
      {
        name: 'slow',
        run: async () => {
          await gate;
          return { kind: 'continue' };
        },
      },
      5000,
    );
    const inFlight = c.check(req);
    let drained = false;
    const drain = c.drain().then(() => {
      drained = true;
    });
    // A check arriving while draining (on a stream the server accepted before its GOAWAY) is decided.
    const arriving = c.check(req);
    // Whatever the drain could do without the in-flight checks has run by the next turn of the loop.
    await new Promise(setImmediate);
    expect(c.inFlight).toBe(2);
    expect(drained).toBe(false);
    release();
    expect((await inFlight).okResponse).toBeTruthy();
    expect((await arriving).okResponse).toBeTruthy();
    await drain;
    expect(drained).toBe(true);
    c.stop();
    expect(errorOf(await c.check(req))).toBe('SHUTTING_DOWN');
  });
});
