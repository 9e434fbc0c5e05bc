import { describe, expect, it } from 'vitest';
import { type HostClaim, parseAnyHostNamespaces, resolveHostOwnership } from './hostOwnership.js';

const claim = (
  namespace: string,
  name: string,
  createdAt: number | undefined,
  hosts?: string[],
): HostClaim => ({
  key: `AccessPolicy/${namespace}/${name}`,
  namespace,
  createdAt,
  hosts,
});

describe('resolveHostOwnership', () => {
  it('gives a host to the namespace that claimed it first; a later claim elsewhere is dropped and reported', () => {
    const r = resolveHostOwnership(
      [
        claim('team-b', 'grab', 2000, ['shop.example.com', 'b.example.com']),
        claim('team-a', 'shop', 1000, ['shop.example.com']),
        claim('team-a', 'shop-admin', 3000, ['shop.example.com']),
      ],
      '*',
    );
    expect(r.hosts.get('AccessPolicy/team-a/shop')).toEqual(['shop.example.com']);
    expect(r.hosts.get('AccessPolicy/team-a/shop-admin')).toEqual(['shop.example.com']);
    expect(r.hosts.get('AccessPolicy/team-b/grab')).toEqual(['b.example.com']);
    expect(r.conflicts.get('AccessPolicy/team-b/grab')).toEqual([
      { host: 'shop.example.com', ownerNamespace: 'team-a', ownerKey: 'AccessPolicy/team-a/shop' },
    ]);
  });

  it('counts an older wildcard as a claim of the hosts under it, and a policy left with no host applies nowhere', () => {
    const r = resolveHostOwnership(
      [
        claim('team-a', 'all', 1000, ['*.example.com']),
        claim('team-b', 'api', 2000, ['api.example.com', 'api.example.com:8443']),
        claim('team-b', 'deep', 2000, ['*.eu.example.com']),
        claim('team-c', 'other', 2000, ['example.org']),
      ],
      '*',
    );
    expect(r.hosts.has('AccessPolicy/team-b/api')).toBe(false);
    expect(r.hosts.has('AccessPolicy/team-b/deep')).toBe(false);
    expect(r.conflicts.get('AccessPolicy/team-b/api')?.map((c) => c.host)).toEqual([
      'api.example.com',
      'api.example.com:8443',
    ]);
    expect(r.hosts.get('AccessPolicy/team-c/other')).toEqual(['example.org']);
  });

  it('lets a policy cover every host only from an allowed namespace', () => {
    const claims = [claim('platform', 'global', undefined), claim('team-a', 'everything', 1000)];
    const r = resolveHostOwnership(claims, parseAnyHostNamespaces('platform'));
    expect(r.hosts.has('AccessPolicy/platform/global')).toBe(true);
    expect(r.hosts.get('AccessPolicy/platform/global')).toBeUndefined();
    expect([...r.refusedAnyHost]).toEqual(['AccessPolicy/team-a/everything']);
    expect(resolveHostOwnership(claims, parseAnyHostNamespaces('*')).refusedAnyHost.size).toBe(0);
  });

  it('orders file claims (no timestamp) after timestamped ones, then by key', () => {
    const r = resolveHostOwnership(
      [
        claim('b', 'p', undefined, ['x.example']),
        claim('a', 'p', undefined, ['x.example']),
        claim('c', 'p', 5, ['x.example']),
      ],
      '*',
    );
    expect(r.hosts.get('AccessPolicy/c/p')).toEqual(['x.example']);
    expect(r.hosts.has('AccessPolicy/a/p')).toBe(false);
    expect(r.hosts.has('AccessPolicy/b/p')).toBe(false);
  });
});
