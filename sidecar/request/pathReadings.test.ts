import { describe, expect, it } from 'vitest';
import { pathReadings } from './pathReadings.js';

describe('pathReadings', () => {
  it('reads a plain lower-case path one way only', () => {
    expect(pathReadings('/api/v1/items', false)).toEqual(['/api/v1/items']);
    expect(pathReadings('/', false)).toEqual(['/']);
  });

  it('drops path parameters from every segment and resolves the dot segments they hid', () => {
    expect(pathReadings('/admin;x=1/users', true)).toEqual(['/admin;x=1/users', '/admin/users']);
    expect(pathReadings('/admin;jsessionid=x', true)).toEqual(['/admin;jsessionid=x', '/admin']);
    expect(pathReadings('/public/..;/admin', true)).toEqual(['/public/..;/admin', '/admin']);
    expect(pathReadings('/a/.;x/b', true)).toEqual(['/a/.;x/b', '/a/b']);
    expect(pathReadings('/;x/admin', true)).toEqual(['/;x/admin', '/admin']);
    expect(pathReadings('/..;/..;/admin', true)).toEqual(['/..;/..;/admin', '/admin']);
    expect(pathReadings('/a/..;', true)).toEqual(['/a/..;', '/']);
  });

  it('reads a trailing slash as absent too', () => {
    expect(pathReadings('/admin/', true)).toEqual(['/admin/', '/admin']);
    expect(pathReadings('/admin;x/', true)).toEqual(['/admin;x/', '/admin/', '/admin;x', '/admin']);
  });

  it('lowercases unless the upstream is declared case-sensitive', () => {
    expect(pathReadings('/ADMIN/users', false)).toEqual(['/ADMIN/users', '/admin/users']);
    expect(pathReadings('/ADMIN/users', true)).toEqual(['/ADMIN/users']);
    expect(pathReadings('/Admin;X/', false)).toEqual([
      '/Admin;X/',
      '/Admin/',
      '/Admin;X',
      '/Admin',
      '/admin;x/',
      '/admin/',
      '/admin;x',
      '/admin',
    ]);
  });
});
