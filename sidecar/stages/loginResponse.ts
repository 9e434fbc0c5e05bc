import { isLoginCookieName, startLogin } from '../login/authorize.js';
import { clearCookie, localTarget, withoutCookies } from '../login/cookies.js';
import type { Login } from '../login/login.js';
import { bindsHost } from '../login/loginHosts.js';
import { type LoginProvider, LoginUnavailable } from '../login/providers.js';
import type { CookieScope, Ctx } from '../pipeline/stage.js';
import type { CheckInput } from '../request/input.js';
import type { Deny, Outcome } from '../request/outcome.js';
import { stepUpOf } from './risk.js';

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
 * The login stage's response phase. An anonymous caller that access denies, on a route
 * whose AccessPolicy offers login, is asked to log in: a browser gets a 302 to the
 * provider (or the chooser page when several are offered), an API client a 401 with
 * WWW-Authenticate. A response phase, because the pipeline ends at the first deny, so a
 * stage after access would never see the decision it has to turn into a redirect; and the
 * access rules stay free of browser concerns. It also clears a stale session cookie the
 * session method found (ctx.staleSessionCookie), and keeps Nox's cookies from the upstream
 * on every request it lets through. Other denies (no policy, bad credentials, quota) stay
 * as they are: only access gives ACCESS_DENIED and CHALLENGE_REQUIRED.
 */
export function loginResponse(
  login: Login,
  input: CheckInput,
  ctx: Ctx,
  deny: Deny | undefined,
): Outcome | Promise<Outcome> | undefined {
  const stale = ctx.staleSessionCookie;
  if (deny === undefined) {
    const cookie = upstreamCookie(input, ctx, login);
    if (!stale && cookie === undefined) return undefined;
    return {
      kind: 'continue',
      ...(stale ? { responseHeaders: clearing(stale) } : {}),
      ...(cookie === undefined
        ? {}
        : cookie === ''
          ? { removeUpstreamHeaders: ['cookie'] }
          : { upstreamHeaders: { cookie } }),
    };
  }
  if (deny.code === 'RISK_CHALLENGE') return stepUp(login, input, ctx);
  if (deny.code !== 'ACCESS_DENIED' && deny.code !== 'CHALLENGE_REQUIRED') return undefined;
  const policy = ctx.accessPolicy;
  // A login is offered only on a host it is bound to: its redirect_uri names the request's host.
  const offered =
    policy !== undefined && ctx.identity === undefined
      ? login.providers.offered(ctx.snapshot, policy).filter((p) => bindsHost(p.hosts, input.host))
      : [];
  if (offered.length === 0)
    return stale
      ? { kind: 'deny', deny: { ...deny, headers: { ...deny.headers, ...clearing(stale) } } }
      : undefined;
  if (!isBrowser(input)) {
    // RFC 6750 §3.1: no credentials were sent, so the challenge carries no error code.
    return {
      kind: 'deny',
      deny: {
        code: 'UNAUTHENTICATED',
        reason: `${deny.reason}; log in or send a bearer token`,
        headers: { ...deny.headers, ...(stale ? clearing(stale) : {}), 'www-authenticate': 'Bearer' },
      },
    };
  }
  const target =
    localTarget(input.query ? `${input.path}?${input.query}` : input.path) ?? login.pages.defaultPath;
  if (offered.length > 1) return { kind: 'deny', deny: login.pages.chooser(offered, target) };
  return redirectToLogin(login, offered[0]!, input, target, ctx.now);
}

/**
 * A RiskModel's challenge to a browser signed in through Nox's login: back to its provider
 * to authenticate again (OIDC prompt=login, max_age and acr_values from the RiskModel's
 * stepUp), and back to the page; the new session's ID token shows the fresh auth_time (and
 * acr) that passes the challenge. An API client keeps the 401 (RFC 9470).
 */
function stepUp(login: Login, input: CheckInput, ctx: Ctx): Outcome | Promise<Outcome> | undefined {
  const id = ctx.identity;
  const policy = ctx.accessPolicy;
  const model = ctx.riskModel;
  if (id?.method !== 'session' || !policy || !model || !isBrowser(input)) return undefined;
  const p = login.providers
    .offered(ctx.snapshot, policy)
    .find((x) => x.resolved.name === id.provider && bindsHost(x.hosts, input.host));
  if (!p) return undefined;
  const { maxAgeS, acrValues } = stepUpOf(model.spec);
  const target =
    localTarget(input.query ? `${input.path}?${input.query}` : input.path) ?? login.pages.defaultPath;
  return redirectToLogin(login, p, input, target, ctx.now, {
    prompt: 'login',
    max_age: String(maxAgeS),
    ...(acrValues.length > 0 ? { acr_values: acrValues.join(' ') } : {}),
  });
}

async function redirectToLogin(
  login: Login,
  p: LoginProvider,
  input: CheckInput,
  target: string,
  now: number,
  extra?: Readonly<Record<string, string>>,
): Promise<Outcome> {
  try {
    return { kind: 'deny', deny: await startLogin(login, p, input, target, now, extra) };
  } catch (e) {
    if (e instanceof LoginUnavailable)
      return { kind: 'error', code: 'IDENTITY_PROVIDER_UNAVAILABLE', cause: e };
    throw e;
  }
}

function clearing(c: CookieScope): Record<string, string> {
  return { 'set-cookie': clearCookie(c.name, { path: '/', sameSite: c.sameSite, domain: c.domain }) };
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
