import { describe, expect, it } from 'vitest';
import {
  clearCookie,
  localTarget,
  parseCookies,
  sessionCookieName,
  setCookie,
  withoutCookies,
} from './cookies.js';

describe('cookies', () => {
  it('parses a Cookie header, keeping repeated names in order', () => {
    const c = parseCookies('a=1; nox_session=abc; a="2"; junk; =x');
    expect(c.get('a')).toEqual(['1', '2']);
    expect(c.get('nox_session')).toEqual(['abc']);
    expect(c.size).toBe(2);
  });

  it('takes cookies out of a Cookie header, keeping every other pair as sent', () => {
    const nox = (n: string) => n === 'nox_session' || n.startsWith('nox_session_login_');
    expect(withoutCookies('a=1; nox_session=abc;b="x y" ;junk', nox)).toBe('a=1; b="x y"; junk');
    expect(withoutCookies('nox_session=abc; nox_session_login_abcdefghijkl=s', nox)).toBe('');
    expect(withoutCookies('a=1; b=2', nox)).toBeUndefined();
    expect(withoutCookies('a=nox_session', nox)).toBeUndefined();
  });

  it('builds Secure, HttpOnly cookies with the SameSite and scope asked for', () => {
    expect(setCookie('s', 'v', { path: '/', sameSite: 'Lax', maxAgeS: 3600 })).toBe(
      's=v; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=Lax',
    );
    expect(clearCookie('s', { path: '/', sameSite: 'Strict', domain: 'example.com' })).toBe(
      's=; Path=/; Domain=example.com; Max-Age=0; HttpOnly; Secure; SameSite=Strict',
    );
  });

  it('refuses values that would inject attributes or break the header', () => {
    expect(() => setCookie('s', 'v; Domain=evil', { path: '/', sameSite: 'Lax' })).toThrow();
    expect(() => setCookie('s', 'v\r\nx: y', { path: '/', sameSite: 'Lax' })).toThrow();
    expect(() => setCookie('s=x', 'v', { path: '/', sameSite: 'Lax' })).toThrow();
  });

  it('sends the browser back only to a local path (no open redirect)', () => {
    expect(localTarget('/app/page?x=1')).toBe('/app/page?x=1');
    for (const bad of [
      '//evil.example/',
      '/\\evil.example',
      'https://evil.example/',
      'evil',
      '',
      null,
      '/a\nb',
    ])
      expect(localTarget(bad), String(bad)).toBeUndefined();
  });

  it('prefixes session cookie names: __Host- when host-only, __Secure- with a Domain', () => {
    expect(sessionCookieName('nox_session', undefined)).toBe('__Host-nox_session');
    expect(sessionCookieName('nox_session', 'example.com')).toBe('__Secure-nox_session');
    expect(sessionCookieName('__Host-s', 'example.com')).toBe('__Secure-s');
    expect(sessionCookieName('__Secure-s', undefined)).toBe('__Host-s');
  });
});
