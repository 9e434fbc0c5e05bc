import * as oidc from 'openid-client';
import { githubApiBase, githubProfile } from '../identity/githubApi.js';
import type { LoginProvider } from './provider.js';

/**
 * Browser login with GitHub, which is OAuth 2.0 without OpenID Connect (docs.github.com,
 * "Authorizing OAuth apps"): no discovery, no ID token, no end-session endpoint. The code is
 * exchanged with PKCE and the client secret; the identity is then read from the user API, as
 * for a GitHub bearer token (identity/githubApi.ts): the numeric id as subject, the primary
 * email and its verified mark from /user/emails, organizations and teams as groups, and the
 * provider's required membership checked before any session exists.
 */

const AUTHORIZE = 'https://github.com/login/oauth/authorize';
const TOKEN = 'https://github.com/login/oauth/access_token';

/** What GitHub needs to be asked for when the spec keeps the OIDC default scopes. */
const defaultScopes = ['read:user', 'user:email', 'read:org'];

export function githubScopes(p: LoginProvider): string {
  const s = p.spec.scopes;
  const oidcDefault = s.length === 3 && ['openid', 'email', 'profile'].every((x) => s.includes(x));
  return (oidcDefault ? defaultScopes : s).join(' ');
}

/** The client of a github provider: its endpoints (GitHub's, or the spec's for GitHub Enterprise), the secret in the body. */
export function githubConfiguration(
  p: LoginProvider,
  secret: string,
  allowInsecure: (url: URL) => boolean,
): oidc.Configuration {
  const ep = p.spec.endpoints ?? {};
  const authorization = ep.authorization ?? AUTHORIZE;
  const token = ep.token ?? TOKEN;
  const c = new oidc.Configuration(
    // GitHub has no issuer identifier; its authorization server's origin stands in (never checked: no ID token, no iss parameter).
    { issuer: new URL(authorization).origin, authorization_endpoint: authorization, token_endpoint: token },
    p.spec.clientId,
    { client_secret: secret },
    oidc.ClientSecretPost(secret),
  );
  if ([authorization, token].some((u) => allowInsecure(new URL(u)))) oidc.allowInsecureRequests(c);
  c.timeout = 5;
  return c;
}

/** The session's claims for a GitHub user, in the names identityOf reads (sub, email, email_verified, groups). */
export async function githubClaims(p: LoginProvider, accessToken: string): Promise<Record<string, unknown>> {
  const lower = (xs: readonly string[] | undefined) => new Set((xs ?? []).map((x) => x.toLowerCase()));
  const profile = await githubProfile(
    {
      api: githubApiBase(p.spec.endpoints?.userinfo),
      orgs: lower(p.spec.github?.organizations),
      teams: lower(p.spec.github?.teams),
    },
    accessToken,
    { timeoutMs: 3_000, maxPages: 10 },
    true,
  );
  return {
    sub: String(profile.id),
    login: profile.login,
    ...(profile.name ? { name: profile.name } : {}),
    ...(profile.email ? { email: profile.email } : {}),
    email_verified: profile.emailVerified,
    ...(profile.avatarUrl ? { picture: profile.avatarUrl } : {}),
    groups: profile.groups,
  };
}
