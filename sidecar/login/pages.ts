import { createHash } from 'node:crypto';
import type { Deny } from '../request/outcome.js';
import type { LoginProvider } from './providers.js';

/**
 * The pages a person sees from Nox itself: the provider chooser, the same-site hop after a
 * login, and a page for every deny a browser gets (errorPages.ts). Self-contained: one inline
 * style (allowed by its hash), no script, nothing loaded but the operator's logo. They never
 * name a namespace, resource, rule or reason: those stay in the JSON API clients get, the
 * log and the audit event, found by the decision id the page shows.
 */

export function escapeHtml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );
}

/** What the operator sets (NOX_LOGIN_TITLE, NOX_LOGIN_LOGO_URL, NOX_LOGIN_DEFAULT_PATH). */
export interface PageSettings {
  /** The site's name: the chooser says "Sign in to <title>", other pages show it at the top. '': none. */
  readonly loginTitle: string;
  /** An https URL, a local path or a data:image/ URL ('' : no logo); validated by the settings. */
  readonly loginLogoUrl: string;
  /** Where a browser goes when its return URL is missing or refused; a local path. */
  readonly loginDefaultPath: string;
}

export const defaultPageSettings: PageSettings = { loginTitle: '', loginLogoUrl: '', loginDefaultPath: '/' };

const css =
  ':root{color-scheme:light dark}*{box-sizing:border-box}' +
  'body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;background:#f3f4f6;color:#1f2328;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}' +
  'main{width:100%;max-width:27rem;margin:1rem;padding:2rem 2rem 1.5rem;background:#fff;border-radius:12px;box-shadow:0 1px 3px rgba(0,0,0,.12),0 8px 24px rgba(0,0,0,.06)}' +
  '.logo{display:block;max-height:48px;max-width:60%;margin:0 0 1.25rem}' +
  '.site{margin:0 0 .25rem;color:#59636e;font-size:.9rem}' +
  'h1{margin:0 0 .75rem;font-size:1.45rem;line-height:1.3}p{margin:0 0 1rem}' +
  '.button{display:block;width:100%;border:0;font:inherit;cursor:pointer;text-align:center;padding:.7rem 1rem;margin:.6rem 0;border-radius:8px;background:#0969da;color:#fff;text-decoration:none;font-weight:600}' +
  '.button:hover,.button:focus{background:#0550ae}' +
  '.ref{margin:1.5rem 0 0;color:#59636e;font-size:.8rem}' +
  '@media (prefers-color-scheme:dark){body{background:#0d1117;color:#e6edf3}main{background:#161b22}.site,.ref{color:#9198a1}}';

/** CSP 3: an inline <style> whose hash is listed runs; nothing else inline does. */
const styleHash = `'sha256-${createHash('sha256').update(css).digest('base64')}'`;

/** The img-src a strict CSP needs for the logo: its origin, 'self' or data:. */
function imageSource(logo: string): string {
  if (logo === '') return '';
  if (logo.startsWith('data:')) return 'data:';
  if (logo.startsWith('/')) return "'self'";
  return new URL(logo).origin;
}

/** A short form of the decision id, for a person to quote to support (the log has the whole id). */
export function shortDecisionId(decisionId: string): string {
  return decisionId.replaceAll('-', '').slice(0, 12);
}

/** An opaque reference to a provider in the chooser's links: no resource name in the page. */
export function providerRef(p: LoginProvider): string {
  return createHash('sha256').update(`nox-provider:${p.key}`).digest('base64url').slice(0, 12);
}

/** What a person reads for a provider: its displayName, else its preset's name, else its issuer's host. */
export function providerLabel(p: LoginProvider, index: number): string {
  if (p.spec.displayName) return p.spec.displayName;
  const preset = { google: 'Google', github: 'GitHub', microsoft: 'Microsoft' } as Record<string, string>;
  if (preset[p.spec.type]) return preset[p.spec.type]!;
  try {
    return new URL(p.spec.issuer ?? '').host;
  } catch {
    return `provider ${index + 1}`;
  }
}

/** What a page says, before it is escaped. */
export interface PageContent {
  readonly heading: string;
  readonly paragraphs: readonly string[];
  /** Links shown as buttons: a label and a local path (or the provider's start link). */
  readonly links: readonly { readonly label: string; readonly href: string }[];
  /** Shown small at the bottom, for support. */
  readonly decisionId?: string;
  /** A button that POSTs to a local path (the logout confirmation), shown before the links. */
  readonly form?: { readonly label: string; readonly action: string };
}

export class Pages {
  /** Headers of every page: HTML, never cached, and a CSP that allows the one style and the logo only. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(readonly settings: PageSettings = defaultPageSettings) {
    const img = imageSource(settings.loginLogoUrl);
    this.headers = Object.freeze({
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'content-security-policy': `default-src 'none'; style-src ${styleHash}; ${img ? `img-src ${img}; ` : ''}base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
      'x-content-type-options': 'nosniff',
      // The URL may be a callback's (code, state): no logo host ever sees it as a Referer.
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY',
    });
  }

  get defaultPath(): string {
    return this.settings.loginDefaultPath;
  }

  /** A whole page; every piece of text and every link is escaped here, and only here. */
  render(c: PageContent, head = ''): string {
    const { loginTitle: site, loginLogoUrl: logo } = this.settings;
    const parts = [
      logo ? `<img class="logo" src="${escapeHtml(logo)}" alt="${escapeHtml(site)}">` : '',
      // The site's name on top, unless the heading already says it (the chooser's).
      site && !c.heading.includes(site) ? `<p class="site">${escapeHtml(site)}</p>` : '',
      `<h1>${escapeHtml(c.heading)}</h1>`,
      ...c.paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`),
      c.form
        ? `<form method="post" action="${escapeHtml(c.form.action)}"><button class="button" type="submit">${escapeHtml(c.form.label)}</button></form>`
        : '',
      ...c.links.map((l) => `<a class="button" href="${escapeHtml(l.href)}">${escapeHtml(l.label)}</a>`),
      c.decisionId
        ? `<p class="ref">Reference: <code>${escapeHtml(shortDecisionId(c.decisionId))}</code></p>`
        : '',
    ];
    const title = site && site !== c.heading ? `${c.heading} · ${site}` : c.heading;
    return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex"><title>${escapeHtml(title)}</title>${head}<style>${css}</style></head><body><main>${parts.join('')}</main></body></html>`;
  }

  /** Several providers are offered on this route: the browser picks one. */
  chooser(providers: readonly LoginProvider[], target: string): Deny {
    const site = this.settings.loginTitle;
    return {
      code: 'LOGIN_PAGE',
      reason: `login required; offered: ${providers.map((p) => p.key).join(', ')}`,
      headers: this.headers,
      body: this.render({
        heading: site ? `Sign in to ${site}` : 'Sign in',
        paragraphs: ['Choose how you want to sign in.'],
        links: providers.map((p, i) => ({
          label: `Sign in with ${providerLabel(p, i)}`,
          href: startLink(p, target),
        })),
      }),
    };
  }

  /**
   * After a login whose session cookie is SameSite=Strict: browsers withhold Strict cookies
   * on a redirect chain that began at another site (the provider), so a 302 would arrive
   * without the new cookie and start the login again. A same-site hop from this page does
   * carry it.
   */
  continue(target: string, setCookie: string): Deny {
    return {
      code: 'LOGIN_PAGE',
      reason: 'login complete (SameSite=Strict: continuing from a same-site page)',
      headers: { ...this.headers, 'set-cookie': setCookie },
      body: this.render(
        {
          heading: 'Signed in',
          paragraphs: ['You are signed in.'],
          links: [{ label: 'Continue', href: target }],
        },
        `<meta http-equiv="refresh" content="0;url=${escapeHtml(target)}">`,
      ),
    };
  }

  /**
   * A logout path opened by a browser (a link, a typed URL): logout is a POST, so this page
   * asks, and its button posts with the token of the session (logoutGuard.ts). Its CSP has no
   * form-action: browsers apply form-action to the redirects after the POST too, and the logout
   * ends at the provider's end-session endpoint or postLogoutRedirect, another origin.
   */
  logoutConfirm(action: string): Deny {
    const site = this.settings.loginTitle;
    return {
      code: 'LOGOUT_CONFIRM',
      reason: 'logout needs a POST: confirmation page',
      headers: {
        ...this.headers,
        'content-security-policy': this.headers['content-security-policy']!.replace(
          " form-action 'none';",
          '',
        ),
      },
      body: this.render({
        heading: 'Sign out?',
        paragraphs: [site ? `You are about to sign out of ${site}.` : 'You are about to sign out.'],
        form: { label: 'Sign out', action },
        links: [{ label: 'Stay signed in', href: this.defaultPath }],
      }),
    };
  }

  /** The page for a deny: its headers and body (errorPages.ts says what it says). */
  deny(content: PageContent): { headers: Readonly<Record<string, string>>; body: string } {
    return { headers: this.headers, body: this.render(content) };
  }
}

/** The start of a login with one provider, from the chooser: its callback path, told to begin. */
export function startLink(p: LoginProvider, target: string): string {
  const q = new URLSearchParams({ nox_start: '1', provider: providerRef(p), rd: target });
  return `${p.callbackPath}?${q}`;
}

/** The provider a chooser link names (by providerRef; a resource name from an older page too). */
export function chosenProvider(providers: readonly LoginProvider[], ref: string | null): LoginProvider {
  return providers.find((p) => providerRef(p) === ref || p.resolved.name === ref) ?? providers[0]!;
}
