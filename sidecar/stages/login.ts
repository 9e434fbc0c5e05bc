import { createHash } from 'node:crypto';
import * as oidc from 'openid-client';
import { GithubRejected } from '../identity/githubApi.js';
import { openPending, pendingCookieName, pendingTtlMs, startLogin } from '../login/authorize.js';
import { clearCookie, localTarget, parseCookies, setCookie } from '../login/cookies.js';
import { errorPage, type LoginFailure, prefersHtml } from '../login/errorPages.js';
import { githubClaims } from '../login/github.js';
import { describeError, type Login, providerFailure } from '../login/login.js';
import { bindsHost } from '../login/loginHosts.js';
import { checkLogoutRequest, logoutToken, logoutTokenParam } from '../login/logoutGuard.js';
import { chosenProvider } from '../login/pages.js';
import { type LoginProvider, LoginUnavailable } from '../login/providers.js';
import { nextRecord, openTokens, UnusableTokens } from '../login/records.js';
import { isSessionId, newSessionId, sessionHash } from '../login/sessionStore.js';
import type { Ctx, Stage } from '../pipeline/stage.js';
import type { CheckInput } from '../request/input.js';
import type { Deny, Outcome } from '../request/outcome.js';
import { loginResponse } from './loginResponse.js';

const deny = (d: Deny): Outcome => ({ kind: 'deny', deny: d });

/**
 * Runs before route: a provider's callback path completes a login, its logout path ends a
 * session, on the hosts its login is bound to (loginHosts.ts). These paths are Nox's there,
 * whatever AccessPolicy covers them; every other request is skipped. Its response phase (loginResponse.ts) sends an anonymous caller that access
 * denies to log in, and keeps Nox's cookies from the upstream.
 */
export class LoginStage implements Stage {
  readonly name = 'login';

  constructor(private readonly login: Login) {}

  run(input: CheckInput, ctx: Ctx): Outcome | Promise<Outcome> {
    const idx = this.login.providers.index(ctx.snapshot);
    // Only on the hosts a provider's login is bound to: elsewhere the path is an ordinary one.
    const bound = (ps: LoginProvider[] | undefined) =>
      ps?.filter((p) => bindsHost(p.hosts, input.host)) ?? [];
    const callback = bound(idx.callbacks.get(input.path));
    if (callback.length) return this.#guard(callback[0]!, true, () => this.#callback(callback, input, ctx));
    const logout = bound(idx.logouts.get(input.path));
    if (logout.length) return this.#guard(logout[0]!, false, () => this.#logoutRequest(logout, input));
    return { kind: 'skip' };
  }

  respond(input: CheckInput, ctx: Ctx, deny: Deny | undefined): Outcome | Promise<Outcome> | undefined {
    return loginResponse(this.login, input, ctx, deny);
  }

  async #guard(p: LoginProvider, isLogin: boolean, f: () => Promise<Outcome>): Promise<Outcome> {
    try {
      return await f();
    } catch (e) {
      const code =
        e instanceof StoreDown
          ? 'SESSION_STORE_UNAVAILABLE'
          : e instanceof LoginUnavailable || providerFailure(e) === 'unavailable'
            ? 'IDENTITY_PROVIDER_UNAVAILABLE'
            : undefined;
      if (!code) throw e;
      if (isLogin) this.login.logins.inc({ provider: p.key, result: 'unavailable' });
      return { kind: 'error', code, cause: e };
    }
  }

  async #callback(providers: LoginProvider[], input: CheckInput, ctx: Ctx): Promise<Outcome> {
    const q = new URLSearchParams(input.query);
    if (q.has('nox_start')) {
      // A link of the chooser page: begin a login with the provider it names.
      const p = chosenProvider(providers, q.get('provider'));
      // A return URL that is not a local path (rd=https://evil.example) lands on the default page.
      const target = localTarget(q.get('rd')) ?? this.login.pages.defaultPath;
      return deny(await startLogin(this.login, p, input, target, ctx.now));
    }
    const failed = (reason: string, failure: LoginFailure, target?: string): Outcome =>
      this.#failed(input, ctx, reason, failure, target);
    const state = q.get('state');
    // The pre-login cookie is named after the state: a forged state finds none.
    const cookies = parseCookies(input.headers.cookie);
    const match = state
      ? providers
          .map((p) => ({ p, raw: cookies.get(pendingCookieName(p, state))?.[0] }))
          .find((m) => m.raw !== undefined)
      : undefined;
    const result = !state
      ? failed('the callback carries no state', 'unusable')
      : !match
        ? failed(
            'no pre-login cookie matches the state (forged state, another browser, or a finished login)',
            'unusable',
          )
        : await this.#complete(match.p, state, match.raw!, input, ctx, failed);
    const ok = result.kind === 'deny' && result.deny.code !== 'LOGIN_FAILED';
    this.login.logins.inc({ provider: (match?.p ?? providers[0]!).key, result: ok ? 'success' : 'failed' });
    return result;
  }

  async #complete(
    p: LoginProvider,
    state: string,
    raw: string,
    input: CheckInput,
    ctx: Ctx,
    failed: (reason: string, failure: LoginFailure, target?: string) => Outcome,
  ): Promise<Outcome> {
    const keyring = this.login.providers.keyring(p);
    const pending = openPending(keyring, p, state, raw, ctx.now);
    if (typeof pending === 'string') return failed(pending, 'unverified');
    const store = this.login.store;
    // Single use: a replayed callback (same state) is refused even before the provider sees the code again.
    const stateKey = createHash('sha256').update(state).digest('hex');
    if (!(await this.#store(() => store.firstUse(stateKey, pendingTtlMs))))
      return failed('the state was already used (replayed callback)', 'replayed', pending.target);
    const config = await this.login.providers.config(p);
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    try {
      // Checks state, iss (RFC 9207), sends the PKCE verifier, validates the ID token and its nonce.
      tokens = await oidc.authorizationCodeGrant(config, new URL(`${pending.redirectUri}?${input.query}`), {
        pkceCodeVerifier: pending.verifier,
        expectedState: pending.state,
        // GitHub is OAuth 2.0 without OpenID Connect: no ID token, so no nonce to check; its
        // identity comes from the user API below.
        ...(p.spec.type === 'github'
          ? { idTokenExpected: false }
          : { expectedNonce: pending.nonce, idTokenExpected: true }),
      });
    } catch (e) {
      if (providerFailure(e) === 'unavailable') throw e;
      // RFC 6749 §4.1.2.1: access_denied is the provider's (or the person's) no, e.g. consent refused.
      const declined = e instanceof oidc.AuthorizationResponseError && e.error === 'access_denied';
      return failed(
        `login at ${p.key} failed: ${describeError(e)}`,
        declined ? 'declined' : 'rejected',
        pending.target,
      );
    }
    const id = newSessionId();
    const hash = sessionHash(id);
    let record: ReturnType<typeof nextRecord>;
    try {
      const claims = p.spec.type === 'github' ? await githubClaims(p, tokens.access_token) : undefined;
      record = nextRecord(p, keyring, hash, tokens, Date.now(), undefined, claims);
    } catch (e) {
      if (e instanceof UnusableTokens || e instanceof GithubRejected)
        return failed(`login at ${p.key} failed: ${e.message}`, 'rejected', pending.target);
      if (p.spec.type === 'github')
        throw new LoginUnavailable(`${p.key}: GitHub user API: ${describeError(e)}`);
      throw e;
    }
    await this.#store(() => store.create(hash, record, p.sessionTtlMs));
    this.login.log.info({ provider: p.key, subject: record.subject, session: hash.slice(0, 12) }, 'login');
    const cookie = setCookie(p.cookie.name, id, {
      path: '/',
      sameSite: p.cookie.sameSite,
      domain: p.cookie.domain,
      maxAgeS: p.sessionTtlMs / 1000,
    });
    if (p.cookie.sameSite === 'Strict') return deny(this.login.pages.continue(pending.target, cookie));
    return deny({
      code: 'LOGIN_COMPLETE',
      reason: `logged in at ${p.key} as ${record.subject}`,
      headers: { location: pending.target, 'set-cookie': cookie, 'cache-control': 'no-store' },
    });
  }

  /** Logout is a POST from this site (logoutGuard.ts); a browser's GET gets a page to confirm it. */
  async #logoutRequest(providers: LoginProvider[], input: CheckInput): Promise<Outcome> {
    const cookies = parseCookies(input.headers.cookie);
    const ids = providers.flatMap((p) => (cookies.get(p.cookie.name) ?? []).filter(isSessionId));
    if (input.method === 'POST') {
      const verdict = checkLogoutRequest(input, ids);
      if (!verdict.ok) return deny({ code: 'LOGOUT_REFUSED', reason: verdict.reason });
      return this.#logout(providers, input);
    }
    if ((input.method === 'GET' || input.method === 'HEAD') && prefersHtml(input.headers.accept)) {
      const q = ids.length ? `?${new URLSearchParams({ [logoutTokenParam]: logoutToken(ids[0]!) })}` : '';
      return deny(this.login.pages.logoutConfirm(`${input.path}${q}`));
    }
    return deny({
      code: 'LOGOUT_METHOD',
      reason: `logout is a POST, not ${input.method}`,
      headers: { allow: 'POST' },
    });
  }

  async #logout(providers: LoginProvider[], input: CheckInput): Promise<Outcome> {
    const cookies = parseCookies(input.headers.cookie);
    let ended = providers[0]!;
    let idToken: string | undefined;
    let refreshToken: string | undefined;
    for (const p of providers) {
      for (const id of cookies.get(p.cookie.name) ?? []) {
        if (!isSessionId(id)) continue;
        const hash = sessionHash(id);
        const record = await this.#store(() => this.login.store.get(hash));
        if (!record || !providers.some((c) => c.key === record.provider)) continue;
        ended = providers.find((c) => c.key === record.provider)!;
        try {
          const t = openTokens(this.login.providers.keyring(ended), hash, record);
          idToken = t?.id;
          refreshToken = t?.refresh;
        } catch {
          // No key: the session still ends here; the provider just gets no id_token_hint.
        }
        await this.#store(() => this.login.revoke(hash, 'logout'));
      }
    }
    let location = ended.postLogoutRedirect ?? this.login.pages.defaultPath;
    try {
      const config = await this.login.providers.config(ended);
      if (refreshToken && config.serverMetadata().revocation_endpoint) {
        // RFC 7009, in the background: the browser does not wait for the provider.
        void oidc.tokenRevocation(config, refreshToken).catch((e: unknown) => {
          this.login.log.warn(
            { provider: ended.key, err: describeError(e) },
            'refresh token revocation failed',
          );
        });
      }
      if (config.serverMetadata().end_session_endpoint) {
        location = oidc.buildEndSessionUrl(config, {
          client_id: ended.spec.clientId,
          ...(idToken ? { id_token_hint: idToken } : {}),
          ...(ended.postLogoutRedirect ? { post_logout_redirect_uri: ended.postLogoutRedirect } : {}),
        }).href;
      }
    } catch (e) {
      // The provider is unreachable: the session has ended at Nox, which is what logout must guarantee.
      this.login.log.warn({ provider: ended.key, err: describeError(e) }, 'logout without the provider');
    }
    const cookie = clearCookie(ended.cookie.name, {
      path: '/',
      sameSite: ended.cookie.sameSite,
      domain: ended.cookie.domain,
    });
    return deny({
      code: 'LOGOUT',
      reason: `logged out of ${ended.key}`,
      headers: { location, 'set-cookie': cookie, 'cache-control': 'no-store' },
    });
  }

  /**
   * A callback that completes no login: LOGIN_FAILED with the reason in the JSON, or for a
   * browser a page saying what happened in plain words, with a link back to the page the
   * login was for (when the pre-login cookie told it) or to the default page.
   */
  #failed(input: CheckInput, ctx: Ctx, reason: string, failure: LoginFailure, target?: string): Outcome {
    const page = prefersHtml(input.headers.accept)
      ? errorPage(
          this.login.pages,
          'LOGIN_FAILED',
          ctx.decisionId,
          { method: input.method, path: '' },
          { failure, target },
        )
      : undefined;
    return deny({ code: 'LOGIN_FAILED', reason, ...page });
  }

  /** A session store call; its failure is a deny (SESSION_STORE_UNAVAILABLE), never a login without a session. */
  async #store<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      throw new StoreDown(e);
    }
  }
}

class StoreDown extends Error {
  override readonly name = 'StoreDown';
  constructor(cause: unknown) {
    super(`session store: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}
