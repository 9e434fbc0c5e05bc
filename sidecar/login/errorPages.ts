import { type ErrorCode, errorSpec } from '../errors.js';
import { localTarget } from './cookies.js';
import type { Pages } from './pages.js';

/**
 * Does this client want a page rather than JSON? Yes when its Accept header (RFC 9110 §12.5.1)
 * names text/html (or XHTML) and ranks it above application/json; a wildcard alone is an API
 * client's (curl, fetch), so it keeps the JSON body exactly as before.
 */
export function prefersHtml(accept: string | undefined): boolean {
  if (!accept?.includes('html')) return false;
  let html = 0;
  let json: number | undefined;
  let wildcard = 0;
  for (const part of accept.split(',')) {
    const [range = '', ...params] = part.split(';').map((s) => s.trim().toLowerCase());
    const qParam = params.find((p) => p.startsWith('q='));
    const q = qParam === undefined ? 1 : Number(qParam.slice(2));
    if (!(q >= 0 && q <= 1)) continue;
    if (range === 'text/html' || range === 'application/xhtml+xml') html = Math.max(html, q);
    else if (range === 'application/json') json = Math.max(json ?? 0, q);
    else if (range === '*/*' || range === 'application/*') wildcard = Math.max(wildcard, q);
  }
  // A more specific range wins (§12.5.1): JSON named outright is ranked by its own q.
  return html > 0 && (json === undefined ? html >= wildcard : html > json);
}

/**
 * Why a login did not complete, as a person can act on it (the JSON's reason keeps the detail):
 * - unusable: the callback has no state or no pre-login cookie (old link, another browser, finished);
 * - unverified: the pre-login cookie is tampered with, expired or for another state;
 * - replayed: the state was already used (a reload, a double submit, a back button);
 * - declined: the provider says access was not granted (error=access_denied: consent refused);
 * - rejected: the provider or Nox refused the code or the ID token.
 */
export type LoginFailure = 'unusable' | 'unverified' | 'replayed' | 'declined' | 'rejected';

type Action = 'retry' | 'home';

interface Message {
  readonly heading: string;
  readonly text: string;
  /** retry: the page the person asked for, again; home: the default page. */
  readonly action: Action;
}

const unavailable = (what: string): Message => ({
  heading: 'Temporarily unavailable',
  text: `${what} Nothing is wrong with your account: try again in a moment.`,
  action: 'retry',
});

/** What a person reads for each code a browser can get as an error. */
export const messages: Partial<Record<ErrorCode, Message>> = {
  LOGIN_FAILED: {
    heading: 'Sign-in did not complete',
    text: 'Something went wrong while signing you in. Start again from the page you wanted.',
    action: 'home',
  },
  ACCESS_DENIED: {
    heading: 'You don’t have access to this page',
    text: 'Your account is not allowed to open this page. If you think it should be, ask the site’s administrator and quote the reference below.',
    action: 'home',
  },
  UNAUTHENTICATED: {
    heading: 'Please sign in',
    text: 'This page needs you to be signed in, and the sign-in your browser sent is missing, has expired or is not accepted here.',
    action: 'retry',
  },
  CHALLENGE_REQUIRED: {
    heading: 'Please sign in again',
    text: 'This page asks you to confirm who you are with a fresh sign-in before it opens.',
    action: 'retry',
  },
  QUOTA_EXCEEDED: {
    heading: 'Too many requests',
    text: 'You have reached the usage limit for now.',
    action: 'retry',
  },
  QUOTA_SUBJECT_MISSING: {
    heading: 'Please sign in',
    text: 'This page counts usage per person, and this request did not say who you are.',
    action: 'home',
  },
  LOGOUT_REFUSED: {
    heading: 'You are still signed in',
    text: 'This sign-out did not come from this site, so it was not done. To sign out, use the site’s own sign-out button.',
    action: 'home',
  },
  LOGOUT_METHOD: {
    heading: 'Sign out from the site',
    text: 'Signing out works from the site’s own sign-out button.',
    action: 'home',
  },
  SESSION_STORE_UNAVAILABLE: unavailable('The service that keeps you signed in could not be reached.'),
  IDENTITY_PROVIDER_UNAVAILABLE: unavailable('The sign-in service is not responding.'),
  QUOTA_STORE_UNAVAILABLE: unavailable('A service this site depends on could not be reached.'),
  NOT_READY: unavailable('The site is starting up.'),
  SHUTTING_DOWN: unavailable('The site is restarting.'),
  DEADLINE_EXCEEDED: {
    heading: 'This took too long',
    text: 'Your request could not be checked in time. Try again.',
    action: 'retry',
  },
  NO_POLICY: {
    heading: 'Page not available',
    text: 'There is nothing to show at this address.',
    action: 'home',
  },
  PATH_AMBIGUOUS: {
    heading: 'Address not accepted',
    text: 'This address can be read in more than one way, so it was refused. Check the link you followed.',
    action: 'home',
  },
  MALFORMED_REQUEST: {
    heading: 'Request not understood',
    text: 'Your browser sent a request this site cannot read.',
    action: 'home',
  },
  INTERNAL: {
    heading: 'Something went wrong',
    text: 'An unexpected error stopped your request. Try again; if it keeps happening, tell the site’s administrator and quote the reference below.',
    action: 'retry',
  },
};

/** A code added later without its own words: said by the class of its status. */
function fallback(code: ErrorCode): Message {
  const status = errorSpec(code).httpStatus;
  if (status >= 500) return unavailable('A service this site depends on is busy or could not be reached.');
  return { heading: 'Request refused', text: 'This request was refused.', action: 'home' };
}

const loginFailures: Record<LoginFailure, Message> = {
  unusable: {
    heading: 'This sign-in link can’t be used',
    text: 'It may be old, already finished, or opened in a different browser from the one that started the sign-in. Start again from the page you wanted.',
    action: 'home',
  },
  unverified: {
    heading: 'Sign-in could not be verified',
    text: 'The sign-in took too long or its details did not check out, so it was stopped. Start again from the page you wanted.',
    action: 'home',
  },
  replayed: {
    heading: 'This sign-in was already used',
    text: 'Each sign-in works once, and this one has been used (by a reload, a second click or the back button). If you have just signed in, continue to your page; otherwise you will be asked to sign in again.',
    action: 'retry',
  },
  declined: {
    heading: 'Sign-in was cancelled',
    text: 'The sign-in service reports that access was not granted, for example because sharing your account with this site was declined. You can try again.',
    action: 'retry',
  },
  rejected: {
    heading: 'Sign-in did not complete',
    text: 'The sign-in service did not confirm who you are. Try again; if it keeps happening, tell the site’s administrator and quote the reference below.',
    action: 'retry',
  },
};

const actionLabel = (code: ErrorCode | LoginFailure, action: Action): string => {
  if (code === 'replayed') return 'Continue';
  if (code === 'unusable' || code === 'unverified') return 'Start again';
  return action === 'retry' ? 'Try again' : 'Go to the start page';
};

/** "in 42 seconds", "in 3 minutes", from a Retry-After of delta-seconds. */
function retryIn(retryAfter: string | undefined): string {
  const s = Number(retryAfter);
  if (!Number.isInteger(s) || s <= 0) return 'Try again later.';
  if (s < 90) return `Try again in ${s} second${s === 1 ? '' : 's'}.`;
  if (s < 5400) return `Try again in ${Math.round(s / 60)} minutes.`;
  return `Try again in ${Math.round(s / 3600)} hours.`;
}

/** The request a deny answers, as much of it as a page needs. */
export interface PageRequest {
  readonly method: string;
  /** The path and query the browser asked for. */
  readonly path: string;
}

/**
 * The page for a deny. Retry goes back to the page asked for (only for GET/HEAD, and only a
 * local path), else to the default page; a login failure goes back to the page the login
 * was for when it is known.
 */
export function errorPage(
  pages: Pages,
  code: ErrorCode,
  decisionId: string,
  request: PageRequest,
  opts: { failure?: LoginFailure; target?: string; retryAfter?: string } = {},
): { headers: Readonly<Record<string, string>>; body: string } {
  const m = (opts.failure ? loginFailures[opts.failure] : messages[code]) ?? fallback(code);
  const same = request.method === 'GET' || request.method === 'HEAD' ? localTarget(request.path) : undefined;
  const retry = opts.failure ? localTarget(opts.target) : same;
  const href = m.action === 'retry' ? (retry ?? pages.defaultPath) : pages.defaultPath;
  const paragraphs = code === 'QUOTA_EXCEEDED' ? [m.text, retryIn(opts.retryAfter)] : [m.text];
  return pages.deny({
    heading: m.heading,
    paragraphs,
    links: [{ label: actionLabel(opts.failure ?? code, m.action), href }],
    decisionId,
  });
}

/** The Accept header, method and path of a CheckRequest, as Envoy sends them (undefined parts: ''). */
export function pageRequestOf(
  http:
    | {
        headers?: Record<string, string> | null;
        method?: string | null;
        path?: string | null;
      }
    | null
    | undefined,
): PageRequest & { accept: string } {
  return { accept: http?.headers?.accept ?? '', method: http?.method ?? '', path: http?.path ?? '' };
}
