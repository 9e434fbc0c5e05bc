import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeCheckRequest, MalformedRequest, normalizePath } from './decode.js';

const http = { method: 'GET', host: 'API.example.com', path: '/a/b?x=1', headers: { 'x-request-id': 'r1' } };

describe('decodeCheckRequest', () => {
  it('reads method, host (lower-cased), normalized path and query', () => {
    const input = decodeCheckRequest({ attributes: { request: { http } } });
    expect(input).toMatchObject({
      method: 'GET',
      host: 'api.example.com',
      path: '/a/b',
      query: 'x=1',
      requestId: 'r1',
    });
  });

  it.each([
    ['no attributes', {}],
    ['no http', { attributes: { request: {} } }],
    ['no method', { attributes: { request: { http: { ...http, method: '' } } } }],
    ['no host', { attributes: { request: { http: { ...http, host: undefined } } } }],
    ['no path', { attributes: { request: { http: { ...http, path: '' } } } }],
    ['relative path', { attributes: { request: { http: { ...http, path: 'a/b' } } } }],
  ])('rejects a request with %s as malformed', (_name, req) => {
    expect(() => decodeCheckRequest(req)).toThrow(MalformedRequest);
  });
});

describe('normalizePath', () => {
  it.each([
    ['/a/./b/../c', '/a/c'],
    ['//admin', '/admin'],
    ['/%61dmin', '/admin'],
    ['/a/', '/a/'],
    ['/..', '/'],
    ['/a/%7Euser', '/a/~user'],
    ['/a#frag', '/a'],
  ])('%s → %s', (raw, want) => {
    expect(normalizePath(raw).path).toBe(want);
  });

  it.each(['/a%2Fb', '/a%2fb', '/a%5Cb', '/a\\b', '/a%00', '/a\u0001'])('rejects %s', (raw) => {
    expect(() => normalizePath(raw)).toThrow(MalformedRequest);
  });

  it('is idempotent and never leaves dot segments or empty segments', () => {
    const segment = fc.constantFrom('a', 'b', '.', '..', '', '%61', '%2E', 'x%7E');
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 8 }), (segs) => {
        const { path } = normalizePath(`/${segs.join('/')}`);
        expect(normalizePath(path).path).toBe(path);
        expect(path.split('/').slice(1, -1)).not.toContain('..');
        expect(path.split('/').slice(1, -1)).not.toContain('.');
        expect(path.slice(1, -1)).not.toContain('//');
      }),
    );
  });
});
