import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import type { RawResource, SourceState } from '../config/source.js';
import { compileSnapshot } from './compile.js';

function state(yaml: string, origin = 'policies.yaml'): SourceState {
  const resources = parseAllDocuments(yaml).map(
    (d, i) => ({ ...(d.toJS() as object), origin: `${origin}#${i}` }) as RawResource,
  );
  return { resources, problems: [] };
}

const access = (name: string, extra = '') => `
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: ${name}, namespace: apps }
spec:
  defaultAction: Allow
  match: { paths: [{ value: /${name} }] }
${extra}`;

describe('compileSnapshot', () => {
  it('indexes accepted policies by route and records a digest', () => {
    const s = compileSnapshot(state(`${access('a')}---${access('b')}`), undefined, 1);
    expect(s.accepted.size).toBe(2);
    expect(s.rejected).toEqual([]);
    expect(s.access.lookup('h', '/a/x', 'GET').map((h) => h.value.key)).toEqual(['AccessPolicy/apps/a']);
    expect(s.digest).toMatch(/^[0-9a-f]{64}$/);
  });

  it('rejects an invalid resource with field and reason, keeping its previous good version', () => {
    const first = compileSnapshot(state(access('a')), undefined, 1);
    const broken = access('a', '  rules: [{ name: r, action: Permit }]');
    const second = compileSnapshot(state(broken), first, 2);
    expect(second.rejected).toHaveLength(1);
    expect(second.rejected[0]!.errors.join()).toContain('spec.rules[0].action');
    expect(second.rejected[0]!.keptPrevious).toBe(true);
    expect(second.access.lookup('h', '/a', 'GET')).toHaveLength(1);
    // A resource that never was valid is simply absent.
    const fresh = compileSnapshot(state(broken), undefined, 1);
    expect(fresh.access.lookup('h', '/a', 'GET')).toHaveLength(0);
  });

  it('rejects what only compilation can find: a window over 366d, an unknown time zone', () => {
    const q = (limit: string, tz = 'UTC') => `
apiVersion: nox.dev/v1alpha1
kind: QuotaPolicy
metadata: { name: q }
spec:
  timeZone: ${tz}
  tiers: [{ name: free, limits: [${limit}] }]`;
    expect(
      compileSnapshot(state(q('{ requests: 1, window: 400d }')), undefined, 1).rejected[0]!.errors[0],
    ).toContain('longer than 366d');
    expect(
      compileSnapshot(state(q('{ requests: 1, window: 1h }', 'Mars/Olympus')), undefined, 1).rejected[0]!
        .errors[0],
    ).toContain('unknown time zone');
  });

  it('keeps the resources of a file that no longer parses', () => {
    const first = compileSnapshot(state(access('a'), '/p/a.yaml'), undefined, 1);
    const second = compileSnapshot(
      { resources: [], problems: [{ origin: '/p/a.yaml', reason: 'YAML syntax error' }] },
      first,
      2,
    );
    expect(second.access.lookup('h', '/a', 'GET')).toHaveLength(1);
    expect(second.rejected[0]!.errors).toEqual(['YAML syntax error']);
  });

  it('drops a deleted resource', () => {
    const first = compileSnapshot(state(access('a')), undefined, 1);
    const second = compileSnapshot({ resources: [], problems: [] }, first, 2);
    expect(second.accepted.size).toBe(0);
  });

  it('accepts but warns about a reference to a provider that does not exist', () => {
    const s = compileSnapshot(state(access('a', '  providers: [missing]')), undefined, 1);
    expect(s.accepted.size).toBe(1);
    expect(s.warnings[0]!.message).toContain('OAuth2Provider apps/missing does not exist');
  });

  it('ignores kinds the sidecar does not enforce', () => {
    const s = compileSnapshot(
      state('apiVersion: nox.dev/v1alpha1\nkind: RedisCluster\nmetadata: { name: r }\nspec: {}'),
      undefined,
      1,
    );
    expect(s.accepted.size).toBe(0);
    expect(s.rejected).toEqual([]);
  });
});
