import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { pathHasPrefix } from '../request/paths.js';
import { RouteIndex } from './router.js';

describe('RouteIndex', () => {
  const idx = new RouteIndex<string>();
  idx.add({ hosts: ['api.example.com'], paths: [{ value: '/api' }] }, 'api');
  idx.add({ hosts: ['*.example.com'] }, 'wild');
  idx.add({ paths: [{ type: 'Exact', value: '/health' }], methods: ['GET'] }, 'health');
  idx.add({ paths: [{ value: '/internal/' }] }, 'internal-below');
  idx.add(undefined, 'everything');
  const names = (host: string, path: string, method = 'GET') =>
    idx
      .lookup(host, path, method)
      .map((h) => h.value)
      .sort();

  it.each([
    ['api.example.com', '/api/x', 'GET', ['api', 'everything', 'wild']],
    ['api.example.com:8443', '/api', 'GET', ['api', 'everything', 'wild']],
    ['api.example.com', '/apix', 'GET', ['everything', 'wild']],
    ['example.com', '/api', 'GET', ['everything']],
    ['a.b.example.com', '/', 'GET', ['everything', 'wild']],
    ['other', '/health', 'GET', ['everything', 'health']],
    ['other', '/health', 'POST', ['everything']],
    ['other', '/health/x', 'GET', ['everything']],
    ['other', '/internal', 'GET', ['everything']],
    ['other', '/internal/a', 'GET', ['everything', 'internal-below']],
  ])('%s %s %s → %j', (host, path, method, want) => {
    expect(names(host, path, method)).toEqual(want);
  });

  it('reports how specific the path match was', () => {
    const hit = idx.lookup('api.example.com', '/api/v1', 'GET').find((h) => h.value === 'api')!;
    expect(hit.pathLength).toBe(4);
    expect(hit.exactHost).toBe(true);
  });

  it('agrees with segment-aligned prefix matching for any path', () => {
    const seg = fc.constantFrom('a', 'b', 'ab', 'x');
    fc.assert(
      fc.property(fc.array(seg, { minLength: 1, maxLength: 3 }), fc.array(seg, { maxLength: 4 }), (p, q) => {
        const prefix = `/${p.join('/')}`;
        const path = `/${q.join('/')}`;
        const i = new RouteIndex<number>();
        i.add({ paths: [{ value: prefix }] }, 1);
        expect(i.lookup('h', path, 'GET').length === 1).toBe(pathHasPrefix(path, prefix));
      }),
    );
  });
});
