import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../../test/harness/tools.js';
import { readExamples } from './examples.js';
import { validateResource } from './validate.js';

const good = readExamples(join(repoRoot, 'examples')).filter(
  (e) => e.object.apiVersion === 'nox.dev/v1alpha1',
);
const bad = readExamples(join(repoRoot, 'examples', 'bad'));

describe('validateResource (the API server’s checks, for files)', () => {
  it('has an example of every kind', () => {
    expect(new Set(good.map((e) => e.object.kind))).toEqual(
      new Set([
        'QuotaPolicy',
        'OAuth2Provider',
        'AccessPolicy',
        'RiskModel',
        'RedisCluster',
        'PostgresCluster',
      ]),
    );
  });

  it.each(good.map((e) => [`${e.object.kind}/${(e.object.metadata as { name: string }).name}`, e]))(
    'accepts %s',
    (_n, e) => {
      const r = validateResource(e.object);
      expect(r.ok ? [] : r.errors).toEqual([]);
    },
  );

  it('fills defaults the way the CRD declares them', () => {
    const r = validateResource({
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'QuotaPolicy',
      metadata: { name: 'q' },
      spec: {},
    });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const spec = (r.object as { spec: Record<string, unknown> }).spec;
    expect(spec).toMatchObject({
      mode: 'Enforce',
      failureMode: 'Closed',
      defaultTier: 'free',
      subject: [{ type: 'User' }],
      tiers: [{ name: 'free', limits: [{ requests: 100, window: '1h' }] }],
    });
  });

  it('has at least 12 bad examples across the kinds', () => {
    expect(bad.length).toBeGreaterThanOrEqual(12);
    expect(new Set(bad.map((e) => e.object.kind)).size).toBe(6);
  });

  it.each(bad.map((e) => [e.file.split('/').at(-1)!, e]))(
    'rejects %s naming the field and the rule',
    (_n, e) => {
      const r = validateResource(e.object);
      expect(r.ok).toBe(false);
      if (r.ok) return;
      const hit = r.errors.find((x) => x.field === e.expect!.field && x.message.includes(e.expect!.message));
      expect(hit, JSON.stringify(r.errors)).toBeTruthy();
    },
  );

  it('rejects objects that are not nox.dev resources', () => {
    for (const o of [null, 'x', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'a' } }]) {
      expect(validateResource(o).ok).toBe(false);
    }
    const r = validateResource({
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'QuotaPolicy',
      metadata: { name: 'Bad_Name' },
      spec: {},
    });
    expect(r.ok ? [] : r.errors.map((e) => e.field)).toEqual(['metadata.name']);
  });
});
