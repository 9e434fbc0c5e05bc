import type { Deny } from '../request/outcome.js';
import type { LoginProvider } from './providers.js';

export function escapeHtml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );
}

const pageHeaders = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  // The page is static: no scripts, no frames, nothing loaded from anywhere.
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
};

function page(title: string, body: string, head = ''): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>${head}<style>body{font-family:system-ui,sans-serif;margin:3rem auto;max-width:28rem}a{display:block;margin:.5rem 0}</style></head><body>${body}</body></html>`;
}

/** The start of a login with one provider, from the chooser: its callback path, told to begin. */
export function startLink(p: LoginProvider, target: string): string {
  const q = new URLSearchParams({ nox_start: '1', provider: p.resolved.name, rd: target });
  return `${p.callbackPath}?${q}`;
}

/** Several providers are offered on this route: the browser picks one. */
export function chooserPage(providers: readonly LoginProvider[], target: string): Deny {
  const links = providers
    .map(
      (p) => `<a href="${escapeHtml(startLink(p, target))}">Sign in with ${escapeHtml(p.resolved.name)}</a>`,
    )
    .join('');
  return {
    code: 'LOGIN_PAGE',
    reason: `login required; offered: ${providers.map((p) => p.key).join(', ')}`,
    headers: pageHeaders,
    body: page('Sign in', `<h1>Sign in</h1>${links}`),
  };
}

/**
 * After a login whose session cookie is SameSite=Strict: browsers withhold Strict cookies
 * on a redirect chain that began at another site (the provider), so a 302 would arrive
 * without the new cookie and start the login again. A same-site hop from this page does
 * carry it.
 */
export function continuePage(target: string, setCookie: string): Deny {
  const url = escapeHtml(target);
  return {
    code: 'LOGIN_PAGE',
    reason: 'login complete (SameSite=Strict: continuing from a same-site page)',
    headers: { ...pageHeaders, 'set-cookie': setCookie },
    body: page(
      'Signed in',
      `<p>Signed in. <a href="${url}">Continue</a></p>`,
      `<meta http-equiv="refresh" content="0;url=${url}">`,
    ),
  };
}
