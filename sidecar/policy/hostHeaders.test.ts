import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import type { RawResource } from '../config/source.js';
import { compileSnapshot } from './compile.js';
import { HostHeaderNames, normalizeHost } from './hostHeaders.js';

describe('identity header names per host', () => {
  const index = new HostHeaderNames([
    { hosts: ['app.test'], names: ['x-a'] },
    { hosts: ['App.Test'], names: ['x-a2'] },
    { hosts: ['*.test'], names: ['x-wild'] },
    { hosts: ['*.b.test'], names: ['x-wild-b'] },
    { hosts: ['other.test:8443'], names: ['x-other'] },
    { hosts: undefined, names: ['x-any'] },
    { hosts: [], names: ['x-any2'] },
  ]);

  it('gathers every policy covering the host: exact, wildcards, any host', () => {
    expect(index.forHost('app.test')).toEqual(['x-a', 'x-a2', 'x-any', 'x-any2', 'x-wild']);
    expect(index.forHost('x.b.test')).toEqual(['x-any', 'x-any2', 'x-wild', 'x-wild-b']);
    expect(index.forHost('y.x.b.test')).toEqual(['x-any', 'x-any2', 'x-wild', 'x-wild-b']);
    expect(index.forHost('b.test')).toEqual(['x-any', 'x-any2', 'x-wild']);
    expect(index.forHost('elsewhere.example')).toEqual(['x-any', 'x-any2']);
  });

  it('reads hosts without port or trailing dot, on both sides: more removed, never fewer', () => {
    expect(index.forHost('app.test:8080')).toEqual(index.forHost('app.test'));
    expect(index.forHost('app.test.')).toEqual(index.forHost('app.test'));
    expect(index.forHost('other.test')).toContain('x-other');
    expect(normalizeHost('App.Example.COM.:8443')).toBe('app.example.com');
    expect(normalizeHost('[::1]:8080')).toBe('[::1]');
  });

  it('is built into the snapshot from every AccessPolicy, whatever its paths', () => {
    const yaml = `
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: main, namespace: apps }
spec: { match: { hosts: [app.test] }, defaultAction: Allow }
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: legacy, namespace: apps }
spec:
  match: { hosts: [app.test], paths: [{ value: /legacy }] }
  defaultAction: Allow
  identityHeaders: { user: X-User, provider: x-auth-provider, email: x-email, groups: x-groups, claims: { X-Tenant: tid } }
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: other, namespace: apps }
spec:
  match: { hosts: [other.test] }
  defaultAction: Allow
  identityHeaders: { user: x-other-user }
`;
    const resources = parseAllDocuments(yaml).map(
      (d, i) => ({ ...(d.toJS() as object), origin: `p.yaml#${i}` }) as RawResource,
    );
    const s = compileSnapshot({ resources, problems: [] }, undefined, 1);
    expect(s.rejected).toEqual([]);
    const app = s.identityHeaderNames.forHost('app.test');
    for (const n of ['x-nox-user', 'x-user', 'x-auth-provider', 'x-email', 'x-groups', 'x-tenant'])
      expect(app).toContain(n);
    expect(app).not.toContain('x-other-user');
    expect(s.identityHeaderNames.forHost('other.test')).toContain('x-other-user');
  });

  it('leaves out a policy on a host another namespace owns: a tenant cannot strip headers from another’s host', () => {
    const policy = (ns: string, created: string, hosts: string[], user: string) =>
      ({
        apiVersion: 'nox.dev/v1alpha1',
        kind: 'AccessPolicy',
        metadata: { name: 'p', namespace: ns, creationTimestamp: created },
        spec: { match: { hosts }, defaultAction: 'Allow', identityHeaders: { user } },
        origin: `${ns}.yaml`,
      }) as RawResource;
    const s = compileSnapshot(
      {
        resources: [
          policy('shop', '2026-01-01T00:00:00Z', ['shop.test'], 'x-shop-user'),
          policy('rogue', '2026-02-01T00:00:00Z', ['rogue.test', 'shop.test'], 'x-shop-token'),
        ],
        problems: [],
      },
      undefined,
      1,
    );
    expect(s.identityHeaderNames.forHost('shop.test')).toContain('x-shop-user');
    expect(s.identityHeaderNames.forHost('shop.test')).not.toContain('x-shop-token');
    expect(s.identityHeaderNames.forHost('rogue.test')).toContain('x-shop-token');
  });
});
