/**
 * What Nox reads from GitHub's REST API about the holder of a token, for both ways a GitHub
 * user reaches Nox: a bearer token (githubMethod.ts) and a browser login (login/github.ts).
 * GitHub is OAuth 2.0 without OpenID Connect: there is no ID token, the user API is the
 * identity. The subject is the numeric user id (a login can be renamed and then taken by
 * someone else); groups are the organizations and "org/team" slugs, read only when the
 * provider requires membership.
 */

/** The token was refused, or the user is not one the provider accepts: a verdict, not an outage. */
export class GithubRejected extends Error {
  override readonly name = 'GithubRejected';
}

export interface GithubApiOptions {
  /** One API call. */
  readonly timeoutMs: number;
  /** Pages (of 100) read from /user/orgs and /user/teams. */
  readonly maxPages: number;
}

/** A provider's view of the API: its base and the memberships it requires (lower-case). */
export interface GithubProviderApi {
  /** API base, e.g. https://api.github.com or https://ghe.example.com/api/v3. */
  readonly api: string;
  readonly orgs: ReadonlySet<string>;
  readonly teams: ReadonlySet<string>;
}

export interface GithubProfile {
  readonly id: number;
  readonly login: string;
  readonly name?: string;
  readonly avatarUrl?: string;
  /** The primary email and whether GitHub verified it (/user/emails), else /user's public email, unverified. */
  readonly email?: string;
  readonly emailVerified: boolean;
  readonly groups: readonly string[];
}

/** The API base from endpoints.userinfo, which may name the base or its /user endpoint. */
export function githubApiBase(userinfo: string | undefined): string {
  return (userinfo ?? 'https://api.github.com').replace(/\/+$/, '').replace(/\/user$/, '');
}

interface User {
  login?: unknown;
  id?: unknown;
  email?: unknown;
  name?: unknown;
  avatar_url?: unknown;
}

const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);

/**
 * The token holder's profile. `withEmails` reads /user/emails (scope user:email, which a
 * login asks for) for the primary address and its verified mark; without it the public email
 * of /user is taken, never as verified. Membership is required when the provider lists orgs
 * or teams (GitHub logins and slugs compare case-insensitively).
 */
export async function githubProfile(
  p: GithubProviderApi,
  token: string,
  opts: GithubApiOptions,
  withEmails = false,
): Promise<GithubProfile> {
  const user = (await githubGet(`${p.api}/user`, token, opts)).body as User;
  if (typeof user.id !== 'number' || typeof user.login !== 'string')
    throw new Error('GitHub /user answered without id or login');
  const [orgs, teams, emails] = await Promise.all([
    p.orgs.size > 0 ? githubList(p.api, '/user/orgs', token, opts) : undefined,
    p.teams.size > 0 ? githubList(p.api, '/user/teams', token, opts) : undefined,
    withEmails ? githubList(p.api, '/user/emails', token, opts) : undefined,
  ]);
  const orgNames = (orgs ?? []).map((o) => String((o as { login?: unknown }).login ?? ''));
  const teamNames = (teams ?? []).map((t) => {
    const team = t as { slug?: unknown; organization?: { login?: unknown } };
    return `${String(team.organization?.login ?? '')}/${String(team.slug ?? '')}`;
  });
  const required = p.orgs.size > 0 || p.teams.size > 0;
  const member =
    orgNames.some((o) => p.orgs.has(o.toLowerCase())) || teamNames.some((t) => p.teams.has(t.toLowerCase()));
  if (required && !member)
    throw new GithubRejected('the user is not a member of a required organization or team');
  const primary = (emails ?? [])
    .map((e) => e as { email?: unknown; primary?: unknown; verified?: unknown })
    .find((e) => e.primary === true && str(e.email));
  const email = primary ? String(primary.email) : str(user.email);
  const name = str(user.name);
  const avatarUrl = str(user.avatar_url);
  return {
    id: user.id,
    login: user.login,
    ...(name ? { name } : {}),
    ...(avatarUrl ? { avatarUrl } : {}),
    ...(email ? { email } : {}),
    emailVerified: primary?.verified === true,
    groups: [...orgNames, ...teamNames],
  };
}

/** All pages of a list, following Link rel="next" only to the same API origin: the token never leaves it. */
async function githubList(
  api: string,
  path: string,
  token: string,
  opts: GithubApiOptions,
): Promise<unknown[]> {
  const out: unknown[] = [];
  let url: string | undefined = `${api}${path}?per_page=100`;
  for (let page = 0; url && page < opts.maxPages; page++) {
    const { body, next } = await githubGet(url, token, opts);
    if (!Array.isArray(body)) throw new Error(`GitHub ${path} answered with a non-list`);
    out.push(...body);
    url = next && new URL(next).origin === new URL(api).origin ? next : undefined;
  }
  return out;
}

async function githubGet(
  url: string,
  token: string,
  opts: GithubApiOptions,
): Promise<{ body: unknown; next?: string }> {
  const res = await fetch(url, {
    headers: {
      authorization: `Bearer ${token}`,
      accept: 'application/vnd.github+json',
      'x-github-api-version': '2022-11-28',
      'user-agent': 'nox-authz',
    },
    signal: AbortSignal.timeout(opts.timeoutMs),
    redirect: 'error',
  });
  const path = new URL(url).pathname;
  if (res.status === 401) throw new GithubRejected('GitHub rejected the token');
  const limited =
    res.status === 429 ||
    (res.status === 403 &&
      (res.headers.get('x-ratelimit-remaining') === '0' || res.headers.has('retry-after')));
  if (limited) throw new Error(`GitHub rate limit reached (${path})`);
  // GitHub answers 404 on /user/emails to a token without the user:email scope.
  if (res.status === 403 || (res.status === 404 && path.endsWith('/user/emails')))
    throw new GithubRejected(`the token may not read ${path} (a scope missing: read:org, user:email?)`);
  if (!res.ok) throw new Error(`GitHub ${path}: HTTP ${res.status}`);
  const next = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '')?.[1];
  return { body: await res.json(), ...(next ? { next } : {}) };
}
