import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Busy, defaultFanoutLimits, FanoutGuards, type FanoutLimits, NegativeCache } from './fanout.js';
import { looksLikeGithubToken } from './githubMethod.js';
import { VerdictCache } from './verdictCache.js';

/** The defaults with one kind's bound replaced: the settings' NOX_FANOUT_* do the same. */
const limits = (over: Partial<FanoutLimits>): FanoutLimits => ({ ...defaultFanoutLimits, ...over });

const metric = async (r: Registry, name: string) =>
  (await r.getMetricsAsJSON()).find((m) => m.name === name)?.values ?? [];

describe('dependency guards', () => {
  it('refuses a call over the concurrency cap without making it, and counts it', async () => {
    const registry = new Registry();
    const g = new FanoutGuards(registry, limits({ tokenReview: { maxInFlight: 2 } })).guard(
      'tokenreview',
      'tokenReview',
    );
    const release: (() => void)[] = [];
    let calls = 0;
    const slow = () =>
      g.run(() => {
        calls++;
        return new Promise<void>((r) => release.push(r));
      });
    const running = [slow(), slow()];
    await expect(slow()).rejects.toBeInstanceOf(Busy);
    expect(calls).toBe(2);
    expect(g.inFlight).toBe(2);
    for (const r of release) r();
    await Promise.all(running);
    expect(g.inFlight).toBe(0);
    await g.run(async () => calls++); // room again
    expect(calls).toBe(3);
    expect(await metric(registry, 'nox_identity_dependency_rejected_total')).toEqual([
      { labels: { dependency: 'tokenreview', bound: 'concurrency' }, value: 1 },
    ]);
    expect((await metric(registry, 'nox_identity_dependency_calls_total'))[0]?.value).toBe(3);
  });

  it('refuses calls over the rate budget: at most burst at once, then the rate', async () => {
    const g = new FanoutGuards(
      undefined,
      limits({ github: { maxInFlight: 100, ratePerSec: 5, burst: 3 } }),
    ).guard('github:api.github.com', 'github');
    const outcomes = await Promise.allSettled(Array.from({ length: 10 }, () => g.run(async () => 1)));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(3);
    const refused = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toMatchObject({ dependency: 'github:api.github.com', bound: 'rate' });
  });

  it('shares one guard per dependency name', () => {
    const guards = new FanoutGuards();
    expect(guards.guard('x', 'github')).toBe(guards.guard('x', 'github'));
    expect(guards.guard('y', 'github')).not.toBe(guards.guard('x', 'github'));
  });
});

describe('negative caches', () => {
  it('remember a rejection for their TTL, within a bounded size', () => {
    const c = new NegativeCache(1000, 3);
    for (const k of ['a', 'b', 'c', 'd']) c.set(k, `bad ${k}`, 0);
    expect(c.size).toBe(3);
    expect(c.get('a', 10)).toBeUndefined(); // the oldest went
    expect(c.get('d', 10)).toBe('bad d');
    expect(c.get('d', 1000)).toBeUndefined(); // expired
  });

  it('keep rejections apart from acceptances, so bad credentials cannot evict good ones', () => {
    let hits = 0;
    const c = new VerdictCache<string>(10, {
      isNegative: (v) => v.startsWith('bad'),
      maxNegative: 2,
      onNegativeHit: () => hits++,
    });
    c.set('good', 'ok', 1000);
    for (let i = 0; i < 100; i++) c.set(`k${i}`, 'bad', 1000);
    expect(c.get('good', 0)).toBe('ok');
    expect(c.size).toBe(3);
    expect(c.get('k99', 0)).toBe('bad');
    expect(hits).toBe(1);
  });
});

describe('GitHub token shapes', () => {
  it('accepts the documented prefixes and legacy 40-hex tokens, and nothing else', () => {
    for (const t of [
      `ghp_${'a'.repeat(36)}`,
      `gho_${'B1'.repeat(18)}`,
      'ghu_x',
      'ghs_abc_DEF',
      `github_pat_11ABCDEFG0${'x'.repeat(72)}`,
      'f'.repeat(40),
    ])
      expect(looksLikeGithubToken(t), t).toBe(true);
    for (const t of [
      'ghr_refresh',
      'ghp_',
      'ghp_a-b',
      `ghp_${'a'.repeat(300)}`,
      'F'.repeat(40),
      'opaque-token-from-an-idp',
      'eyJhbGciOiJub25lIn0.e30.',
    ])
      expect(looksLikeGithubToken(t), t).toBe(false);
  });
});
