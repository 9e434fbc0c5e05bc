import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A user the stand-in knows, as GET /user describes one (GitHub REST API, "Get the authenticated user"). */
export interface GithubUser {
  readonly login: string;
  readonly id: number;
  readonly email?: string | null;
  readonly name?: string | null;
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
  close(): Promise<void>;
}

/**
 * A stand-in for GitHub's REST API (github.com is not reachable from tests), speaking its
 * documented shapes for what Nox reads: GET /user with `Authorization: Bearer <token>` answers
 * the user (login, id, email, name, avatar_url, ...) with the rate-limit headers, or 401
 * `{"message":"Bad credentials","documentation_url":...}`; /user/orgs and /user/teams answer
 * empty lists. Every request is counted where it is served.
 */
export async function startGithubApi(): Promise<GithubApi> {
  const tokens = new Map<string, GithubUser>();
  let requests = 0;
  let rejected = 0;
  const server: Server = createServer((req, res) => {
    requests++;
    const path = new URL(req.url ?? '/', 'http://x').pathname;
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
    if (path === '/user/orgs' || path === '/user/teams') return send(200, []);
    send(404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => requests,
    rejected: () => rejected,
    setToken(token, user) {
      if (user) tokens.set(token, user);
      else tokens.delete(token);
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
