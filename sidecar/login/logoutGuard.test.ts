import { describe, expect, it } from 'vitest';
import { checkInput } from '../../test/harness/checks.js';
import { checkLogoutRequest, logoutToken } from './logoutGuard.js';

const id = 'a'.repeat(43);
const post = (headers: Record<string, string>, query = '') =>
  checkInput({ method: 'POST', host: 'app.example:8443', path: '/logout', query, headers });

describe('logout guard', () => {
  it('refuses what the browser says is cross-site, whatever else the request carries', () => {
    const token = `nox_logout=${logoutToken(id)}`;
    const forged: Record<string, string>[] = [
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site' },
      { origin: 'https://evil.example' },
      { origin: 'https://app.example' }, // another port is another origin
      { origin: 'not a url' },
    ];
    for (const headers of forged)
      expect(checkLogoutRequest(post(headers, token), [id]).ok, JSON.stringify(headers)).toBe(false);
  });

  it('accepts a same-origin proof or the session’s own token', () => {
    expect(checkLogoutRequest(post({ 'sec-fetch-site': 'same-origin' }), [id]).ok).toBe(true);
    expect(checkLogoutRequest(post({ origin: 'https://APP.example:8443' }), [id]).ok).toBe(true);
    expect(checkLogoutRequest(post({ origin: 'null' }, `nox_logout=${logoutToken(id)}`), [id]).ok).toBe(true);
    expect(checkLogoutRequest(post({}, `nox_logout=${logoutToken('b'.repeat(43))}`), [id]).ok).toBe(false);
    expect(checkLogoutRequest(post({}), [id])).toEqual({
      ok: false,
      reason: 'logout without a logout token or a same-origin header',
    });
  });

  it('lets a request without a session through: it only clears cookies', () => {
    expect(checkLogoutRequest(post({}), []).ok).toBe(true);
  });

  it('gives each session its own token', () => {
    expect(logoutToken(id)).toMatch(/^[\w-]{43}$/);
    expect(logoutToken(id)).not.toBe(logoutToken('b'.repeat(43)));
  });
});
