import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { checkContext, checkInput } from '../../test/harness/checks.js';
import type { RawResource } from '../config/source.js';
import { compileSnapshot } from '../policy/compile.js';
import { MemoryQuotaStore } from '../quota/memoryStore.js';
import type { QuotaStore } from '../quota/store.js';
import type { Outcome } from '../request/outcome.js';
import { QuotaStage } from './quota.js';

const quota = (name: string, spec: Record<string, unknown>): RawResource =>
  ({
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'QuotaPolicy',
    metadata: { name, namespace: 'ns' },
    spec,
    origin: 't',
  }) as RawResource;
const snapshot = compileSnapshot(
  {
    resources: [
      quota('enforced', {
        match: { paths: [{ value: '/e' }] },
        subject: [{ type: 'Header', name: 'x-user' }],
        tiers: [{ name: 'free', limits: [{ requests: 3, window: '1h' }] }],
        costs: [{ match: { paths: [{ value: '/e/heavy' }] }, cost: 3 }],
      }),
      quota('dry', {
        match: { paths: [{ value: '/d' }] },
        mode: 'DryRun',
        subject: [{ type: 'Header', name: 'x-user' }],
        tiers: [{ name: 'free', limits: [{ requests: 1, window: '1h' }] }],
      }),
    ],
    problems: [],
  },
  undefined,
  1,
);
const input = (path: string, headers: Record<string, string> = { 'x-user': 'u1' }) =>
  checkInput({ path, headers });
const ctx = () => checkContext({ snapshot });
const run = (stage: QuotaStage, path: string, headers?: Record<string, string>) =>
  stage.run(input(path, headers), ctx());
const kinds = (outcomes: Outcome[]) =>
  outcomes.map((o) =>
    o.kind === 'deny' ? o.deny.code : o.kind === 'continue' && o.dryRunDeny ? 'dry-run-deny' : o.kind,
  );

describe('QuotaStage', () => {
  it('skips routes no QuotaPolicy covers', async () => {
    expect((await run(new QuotaStage(new MemoryQuotaStore(), new Registry()), '/other')).kind).toBe('skip');
  });

  it('weighs requests by the first matching cost rule', async () => {
    const stage = new QuotaStage(new MemoryQuotaStore(), new Registry());
    expect(kinds([await run(stage, '/e/heavy'), await run(stage, '/e/light')])).toEqual([
      'continue',
      'QUOTA_EXCEEDED',
    ]);
  });

  it('in DryRun counts and reports, but never denies', async () => {
    const stage = new QuotaStage(new MemoryQuotaStore(), new Registry());
    const out = [await run(stage, '/d'), await run(stage, '/d'), await run(stage, '/d')];
    // DryRun charges like Enforce (so it shows what would happen), then reports instead of denying.
    expect(kinds(out)).toEqual(['continue', 'dry-run-deny', 'dry-run-deny']);
  });

  it('denies a request that lacks a part of the subject, naming it', async () => {
    const o = await run(new QuotaStage(new MemoryQuotaStore(), new Registry()), '/e', {});
    expect(o).toMatchObject({ kind: 'deny', deny: { code: 'QUOTA_SUBJECT_MISSING' } });
    if (o.kind === 'deny') expect(o.deny.reason).toContain('Header x-user');
  });

  it('turns a store failure into an error that fails closed unless the policy is Open', async () => {
    const broken: QuotaStore = {
      name: 'broken',
      take: () => Promise.reject(new Error('down')),
      close: async () => undefined,
    };
    const o = await run(new QuotaStage(broken, new Registry()), '/e');
    expect(o).toMatchObject({ kind: 'error', code: 'QUOTA_STORE_UNAVAILABLE', failOpen: false });
  });
});
