import { describe, expect, it } from 'vitest';
import { allErrorCodes, type ErrorCode, errorSpec } from '../errors.js';
import { denyResponse } from '../stages/respond.js';
import { errorPage, messages, prefersHtml } from './errorPages.js';
import { Pages } from './pages.js';

const pages = new Pages({ loginTitle: 'Acme <Portal>', loginLogoUrl: '', loginDefaultPath: '/home' });
const browserAccept = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
const view = (accept: string, path = '/app/x?y=1', method = 'GET') => ({
  pages,
  request: { accept, method, path },
});
const bodyOf = (r: ReturnType<typeof denyResponse>) => String(r.deniedResponse!.body);
const headersOf = (r: ReturnType<typeof denyResponse>) =>
  Object.fromEntries(r.deniedResponse!.headers!.map((h) => [h.header!.key, h.header!.value]));

describe('who gets a page', () => {
  it('is a client that ranks HTML above JSON; a wildcard alone is an API client', () => {
    expect(prefersHtml(browserAccept)).toBe(true);
    expect(prefersHtml('text/html')).toBe(true);
    expect(prefersHtml('text/html, */*')).toBe(true);
    for (const a of [
      undefined,
      '',
      '*/*',
      'application/json',
      'application/json, text/html',
      'text/html;q=0.5, application/json',
      'text/html;q=0, */*',
      'text/plain',
    ])
      expect(prefersHtml(a), String(a)).toBe(false);
  });
});

describe('deny pages', () => {
  const reason = 'denied by AccessPolicy team-a/secret-policy rule admins';

  it('keeps the JSON body exactly for API clients, and for redirects', () => {
    const json = denyResponse({ code: 'ACCESS_DENIED', reason }, 'd-1', view('application/json'));
    expect(bodyOf(json)).toBe(JSON.stringify({ error: 'ACCESS_DENIED', reason, decisionId: 'd-1' }));
    expect(headersOf(json)['content-type']).toBe('application/json');
    const redirect = denyResponse(
      {
        code: 'LOGIN_REDIRECT',
        reason: 'login required: sent to ns/p',
        headers: { location: 'https://idp/' },
      },
      'd-2',
      view(browserAccept),
    );
    expect(headersOf(redirect)['content-type']).toBe('application/json');
    expect(denyResponse({ code: 'NO_POLICY', reason }, 'd-3')).toEqual(
      denyResponse({ code: 'NO_POLICY', reason }, 'd-3', view('*/*')),
    );
  });

  it('gives a browser a page with the code’s words, a link and the short decision id, and nothing internal', () => {
    for (const code of allErrorCodes.filter((c) => errorSpec(c).httpStatus >= 400)) {
      const r = denyResponse(
        { code, reason, headers: { 'retry-after': '42' } },
        '0b7c52e4-1f0a-4c3e-9d2b-5e6f7a8b9c0d',
        view(browserAccept),
      );
      const body = bodyOf(r);
      const h = headersOf(r);
      expect(r.deniedResponse!.status!.code, code).toBe(errorSpec(code).httpStatus);
      expect(h['content-type']).toBe('text/html; charset=utf-8');
      expect(h['cache-control']).toBe('no-store');
      expect(h['x-content-type-options']).toBe('nosniff');
      expect(h['x-nox-error']).toBe(code);
      expect(h['retry-after']).toBe('42');
      expect(h['content-security-policy']).toMatch(/^default-src 'none'; style-src 'sha256-[^']+'; base-uri/);
      expect(body, code).not.toContain('team-a');
      expect(body, code).not.toContain('secret-policy');
      expect(body, code).not.toContain(code);
      expect(body).toContain('Reference: <code>0b7c52e41f0a</code>');
      expect(body).toContain('<p class="site">Acme &lt;Portal&gt;</p>');
      expect(body).not.toContain('<script');
      const m = messages[code];
      if (m) expect(body, code).toContain(m.heading);
      expect(body).toMatch(/<a class="button" href="(\/app\/x\?y=1|\/home)">/);
    }
  });

  it('says what each code the brief names means, with the right link', () => {
    const say = (code: ErrorCode, path = '/app/x?y=1', method = 'GET', retryAfter?: string) =>
      errorPage(pages, code, 'd', { method, path }, retryAfter ? { retryAfter } : {}).body;
    expect(say('ACCESS_DENIED')).toContain('You don’t have access to this page');
    expect(say('ACCESS_DENIED')).toContain('href="/home">Go to the start page<');
    expect(say('UNAUTHENTICATED')).toContain('href="/app/x?y=1">Try again<');
    expect(say('CHALLENGE_REQUIRED')).toContain('Please sign in again');
    expect(say('QUOTA_EXCEEDED', '/a', 'GET', '42')).toContain('Try again in 42 seconds.');
    expect(say('QUOTA_EXCEEDED', '/a', 'GET', '600')).toContain('Try again in 10 minutes.');
    expect(say('SESSION_STORE_UNAVAILABLE')).toContain('keeps you signed in could not be reached');
    expect(say('IDENTITY_PROVIDER_UNAVAILABLE')).toContain('The sign-in service is not responding');
    expect(say('NO_POLICY')).toContain('Page not available');
    expect(say('DEADLINE_EXCEEDED')).toContain('This took too long');
    expect(say('LOGIN_FAILED')).toContain('Sign-in did not complete');
    // A retry is a GET of a local path: a POST, or a path a browser reads as another site, goes home.
    expect(say('DEADLINE_EXCEEDED', '/form', 'POST')).toContain('href="/home"');
    expect(say('DEADLINE_EXCEEDED', '//evil.example/x')).toContain('href="/home"');
    // Everything from the request is escaped.
    expect(say('DEADLINE_EXCEEDED', '/x?a="><script>alert(1)</script>')).toContain(
      'href="/x?a=&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"',
    );
  });

  it('words each login failure and links back to the page the login was for', () => {
    const failed = (failure: Parameters<typeof errorPage>[4] extends infer O ? O : never) =>
      errorPage(pages, 'LOGIN_FAILED', 'd', { method: 'GET', path: '' }, failure).body;
    expect(failed({ failure: 'declined', target: '/app/r?m=5' })).toContain('Sign-in was cancelled');
    expect(failed({ failure: 'declined', target: '/app/r?m=5' })).toContain('href="/app/r?m=5">Try again<');
    expect(failed({ failure: 'replayed', target: '/app/inbox' })).toContain('href="/app/inbox">Continue<');
    expect(failed({ failure: 'unusable' })).toContain('href="/home">Start again<');
    expect(failed({ failure: 'unverified' })).toContain('could not be verified');
    expect(failed({ failure: 'rejected', target: 'https://evil.example' })).toContain('href="/home"');
  });

  it('allows the logo’s origin only', () => {
    const csp = (logo: string) =>
      new Pages({ loginTitle: '', loginLogoUrl: logo, loginDefaultPath: '/' }).headers[
        'content-security-policy'
      ];
    expect(csp('https://cdn.example.com/brand/logo.svg')).toContain('img-src https://cdn.example.com;');
    expect(csp('/static/logo.png')).toContain("img-src 'self';");
    expect(csp('data:image/png;base64,AAAA')).toContain('img-src data:;');
    expect(csp('')).not.toContain('img-src');
  });
});
