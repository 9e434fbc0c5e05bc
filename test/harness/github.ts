import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A user the stand-in knows, as GET /user describes one (GitHub REST API, "Get the authenticated user"). */
export interface GithubUser {
  readonly login: string;
  readonly id: number;
  readonly email?: string | null;
  readonly name?: string | null;
  /** Organizations (logins) /user/orgs lists. */
  readonly orgs?: readonly string[];
  /** What /user/emails lists (scope user:email). */
  readonly emails?: readonly { email: string; primary: boolean; verified: boolean }[];
}

/** An OAuth app registered with the stand-in (GitHub "OAuth apps"): browser login. */
export interface GithubOAuthApp {
  readonly clientId: string;
  readonly clientSecret: string;
}

export interface GithubApi {
  /** Base URL (what an OAuth2Provider of type github takes as endpoints.userinfo). */
  readonly url: string;
  /** Requests served, whatever their answer: the count a test bounds. */
  readonly requests: () => number;
  /** Requests answered 401 Bad credentials. */
  readonly rejected: () => number;
  /** Makes `token` a valid token of `user` (or, with undefined, revokes it). */
  setToken(token: string, user: GithubUser | undefined): void;
  /** Who signs in at the authorize page next (undefined: the person declines, error=access_denied). */
  signIn: GithubUser | undefined;
  /** Codes exchanged for a token, and exchanges refused (bad code, client, redirect_uri or PKCE). */
  readonly exchanges: () => { granted: number; refused: number };
  close(): Promise<void>;
}

/**
 * A stand-in for GitHub's REST API (github.com is not reachable from tests), speaking its
 * documented shapes for what Nox reads: GET /user with `Authorization: Bearer <token>` answers
 * the user (login, id, email, name, avatar_url, ...) with the rate-limit headers, or 401
 * `{"message":"Bad credentials","documentation_url":...}`; /user/orgs and /user/teams answer
 * the user's organizations and /user/emails its addresses. With an OAuth app it also plays
 * github.com's browser login ("Authorizing OAuth apps"): /login/oauth/authorize sends the
 * browser back with a code (or error=access_denied), /login/oauth/access_token exchanges it
 * once, checking the client secret, redirect_uri and PKCE (S256), and answers errors with
 * HTTP 200 and an "error" field, as GitHub does. Every request is counted where it is served.
 */
export async function startGithubApi(app?: GithubOAuthApp): Promise<GithubApi> {
  const tokens = new Map<string, GithubUser>();
  const codes = new Map<string, { user: GithubUser; redirectUri: string; challenge: string | null }>();
  const exchanges = { granted: 0, refused: 0 };
  let requests = 0;
  let rejected = 0;
  const self = { signIn: undefined as GithubUser | undefined };
  const server: Server = createServer((req, res) => {
    requests++;
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    if (app && path === '/login/oauth/authorize') {
      const q = url.searchParams;
      const back = new URL(q.get('redirect_uri') ?? '');
      back.searchParams.set('state', q.get('state') ?? '');
      if (q.get('client_id') !== app.clientId) {
        res.writeHead(404).end('unknown client');
        return;
      }
      if (!self.signIn) back.searchParams.set('error', 'access_denied');
      else {
        const code = randomBytes(10).toString('hex');
        codes.set(code, {
          user: self.signIn,
          redirectUri: q.get('redirect_uri')!,
          challenge: q.get('code_challenge'),
        });
        back.searchParams.set('code', code);
      }
      res.writeHead(302, { location: back.href }).end();
      return;
    }
    if (app && path === '/login/oauth/access_token' && req.method === 'POST') {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        const f = new URLSearchParams(body);
        const grant = codes.get(f.get('code') ?? '');
        codes.delete(f.get('code') ?? ''); // a code works once
        const verifier = f.get('code_verifier') ?? '';
        const ok =
          grant !== undefined &&
          f.get('client_id') === app.clientId &&
          f.get('client_secret') === app.clientSecret &&
          f.get('redirect_uri') === grant.redirectUri &&
          (grant.challenge === null ||
            createHash('sha256').update(verifier).digest('base64url') === grant.challenge);
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
        if (!ok) {
          exchanges.refused++;
          res.end(
            JSON.stringify({
              error: 'bad_verification_code',
              error_description: 'The code passed is incorrect or expired.',
              error_uri: 'https://docs.github.com/apps/oauth-apps',
            }),
          );
          return;
        }
        exchanges.granted++;
        const token = `gho_${randomBytes(27).toString('base64url').replace(/-/g, '_')}`;
        tokens.set(token, grant.user);
        res.end(
          JSON.stringify({
            access_token: token,
            token_type: 'bearer',
            scope: 'read:org,read:user,user:email',
          }),
        );
      });
      return;
    }
    const token = /^(?:Bearer|token) (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const send = (status: number, body: unknown) => {
      res.writeHead(status, {
        'content-type': 'application/json; charset=utf-8',
        'x-github-media-type': 'github.v3; format=json',
        'x-ratelimit-limit': '5000',
        'x-ratelimit-remaining': '4999',
        'x-ratelimit-resource': 'core',
      });
      res.end(JSON.stringify(body));
    };
    const user = token === undefined ? undefined : tokens.get(token);
    if (!user) {
      rejected++;
      return send(401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' });
    }
    if (path === '/user')
      return send(200, {
        login: user.login,
        id: user.id,
        node_id: `U_${user.id}`,
        avatar_url: `https://avatars.githubusercontent.com/u/${user.id}?v=4`,
        type: 'User',
        site_admin: false,
        name: user.name ?? null,
        email: user.email ?? null,
      });
    if (path === '/user/orgs')
      return send(
        200,
        (user.orgs ?? []).map((login) => ({ login, id: 1 })),
      );
    if (path === '/user/teams') return send(200, []);
    if (path === '/user/emails') return send(200, user.emails ?? []);
    send(404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return Object.assign(self, {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => requests,
    rejected: () => rejected,
    setToken(token: string, user: GithubUser | undefined) {
      if (user) tokens.set(token, user);
      else tokens.delete(token);
    },
    exchanges: () => ({ ...exchanges }),
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}
