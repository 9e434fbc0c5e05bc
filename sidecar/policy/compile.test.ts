import { describe, expect, it } from 'vitest';
import { compile, PolicyError } from './compile.js';
import { pathHasPrefix } from './snapshot.js';

describe('compile', () => {
  it('builds a frozen snapshot with version and digest', () => {
    const s = compile('denyPaths: [/admin, /admin]', 3);
    expect(s.version).toBe(3);
    expect(s.denyPaths).toEqual(['/admin']);
    expect(s.digest).toMatch(/^[0-9a-f]{64}$/);
    expect(Object.isFrozen(s)).toBe(true);
    expect(Object.isFrozen(s.denyPaths)).toBe(true);
  });

  it.each([
    ['denyPaths: [admin]', 'denyPaths[0]'],
    ['denyPaths: [/a/../b]', 'denyPaths[0]'],
    ['denyPaths: [/a?b]', 'denyPaths[0]'],
    ['denyPaths: /admin', 'denyPaths'],
    ['denyPath: [/admin]', 'denyPath'],
    ['- a', '(document)'],
    ['a: [', '(document)'],
  ])('rejects %j naming %s', (src, field) => {
    expect(() => compile(src, 1)).toThrow(PolicyError);
    try {
      compile(src, 1);
    } catch (e) {
      expect((e as PolicyError).field).toBe(field);
    }
  });
});

describe('pathHasPrefix', () => {
  it.each([
    ['/admin', '/admin', true],
    ['/admin/x', '/admin', true],
    ['/administrator', '/admin', false],
    ['/internal/x', '/internal/', true],
    ['/internal', '/internal/', false],
    ['/x', '/', true],
  ])('%s under %s: %s', (path, prefix, want) => {
    expect(pathHasPrefix(path, prefix)).toBe(want);
  });
});
