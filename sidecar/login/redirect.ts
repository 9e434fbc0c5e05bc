import type { CheckInput, Ctx, Outcome, Stage } from '../pipeline/types.js';
import { isLoginCookieName, startLogin } from './authorize.js';
import { clearCookie, localTarget, withoutCookies } from './cookies.js';
import type { Login } from './login.js';
import { chooserPage } from './pages.js';
import { LoginUnavailable } from './providers.js';

/**
 * A browser, as opposed to an API client: a top-level page load (GET/HEAD, asks for HTML)
 * without credentials of its own. Only a safe method is redirected: a POST would lose its
 * body on the way through the provider.
 */
export function isBrowser(input: CheckInput): boolean {
  const h = input.headers;
  return (
    (input.method === 'GET' || input.method === 'HEAD') &&
    h.authorization === undefined &&
    h['x-requested-with'] === undefined &&
    (h.accept ?? '').includes('text/html')
  );
}

/**
 * Wraps the access stage. An anonymous caller that access denies, on a route whose
 * AccessPolicy offers login, is asked to log in: a browser gets a 302 to the provider (or
 * the chooser page when several are offered), an API client a 401 with WWW-Authenticate.
 * A wrapper, because the pipeline ends at the first deny, so a stage after access would
 * never see the decision it has to turn into a redirect; and the access rules stay free of
 * browser concerns. It also clears a stale session cookie the session method found, and
 * keeps Nox's cookies from the upstream on every request it lets through.
 */
export function withLoginRedirect(access: Stage, login: Login): Stage {
  return {
    name: access.name,
    async run(input: CheckInput, ctx: Ctx): Promise<Outcome> {
      const out = await access.run(input, ctx);
      const stale = login.takeStale(ctx);
      const clear: Record<string, string> = stale
        ? {
            'set-cookie': clearCookie(stale.cookie.name, {
              path: '/',
              sameSite: stale.cookie.sameSite,
              domain: stale.cookie.domain,
            }),
          }
        : {};
      if (out.kind === 'continue') {
        const cookie = upstreamCookie(input, ctx, login);
        if (!stale && cookie === undefined) return out;
        return {
          ...out,
          ...(stale ? { responseHeaders: { ...out.responseHeaders, ...clear } } : {}),
          ...(cookie === undefined
            ? {}
            : cookie === ''
              ? { removeUpstreamHeaders: [...(out.removeUpstreamHeaders ?? []), 'cookie'] }
              : { upstreamHeaders: { ...out.upstreamHeaders, cookie } }),
        };
      }
      if (out.kind !== 'deny') return out;
      const policy = ctx.accessPolicy;
      const asksLogin =
        policy !== undefined &&
        ctx.identity === undefined &&
        (out.deny.code === 'ACCESS_DENIED' || out.deny.code === 'CHALLENGE_REQUIRED');
      const offered = asksLogin ? login.providers.offered(ctx.snapshot, policy) : [];
      if (offered.length === 0)
        return stale
          ? { kind: 'deny', deny: { ...out.deny, headers: { ...out.deny.headers, ...clear } } }
          : out;
      if (!isBrowser(input)) {
        // RFC 6750 §3.1: no credentials were sent, so the challenge carries no error code.
        return {
          kind: 'deny',
          deny: {
            code: 'UNAUTHENTICATED',
            reason: `${out.deny.reason}; log in or send a bearer token`,
            headers: { ...out.deny.headers, ...clear, 'www-authenticate': 'Bearer' },
          },
        };
      }
      const target = localTarget(input.query ? `${input.path}?${input.query}` : input.path) ?? '/';
      if (offered.length > 1) return { kind: 'deny', deny: chooserPage(offered, target) };
      try {
        return { kind: 'deny', deny: await startLogin(login, offered[0]!, input, target, ctx.now) };
      } catch (e) {
        if (e instanceof LoginUnavailable)
          return { kind: 'error', code: 'IDENTITY_PROVIDER_UNAVAILABLE', cause: e };
        throw e;
      }
    },
  };
}

/**
 * The Cookie header the upstream gets: the request's, without Nox's session and pre-login
 * cookies (of every login provider, whoever identified the caller: a session id is a
 * credential the upstream has no use for). undefined: the header goes through untouched;
 * '': nothing is left, so the header is removed. Envoy overwrites a header the OK response
 * sets, so every other cookie has to be passed on here.
 */
function upstreamCookie(input: CheckInput, ctx: Ctx, login: Login): string | undefined {
  const header = input.headers.cookie;
  if (!header) return undefined;
  const names = login.providers.index(ctx.snapshot).cookieNames;
  if (names.size === 0) return undefined;
  // Fast path: most requests through a login route carry no Nox cookie name at all.
  if (![...names].some((n) => header.includes(n))) return undefined;
  return withoutCookies(header, (name) => isLoginCookieName(name, names));
}
