import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GithubMethod } from '../../sidecar/identity/githubMethod.js';
import { compileSnapshot } from '../../sidecar/policy/compile.js';
import type { Snapshot } from '../../sidecar/policy/snapshot.js';
import { checkContext, checkInput, routedPolicy } from '../harness/checks.js';

/** GitHub's documented shapes: GET /user, /user/orgs ([{login}]), /user/teams ([{slug, organization:{login}}]). */
interface StandInUser {
  user: { login: string; id: number; email: string | null; name: string | null; avatar_url: string };
  orgs: string[];
  teams: Array<[org: string, slug: string]>;
  /** /user/orgs and /user/teams answer 403 (the token lacks read:org). */
  noReadOrg?: boolean;
  /** The orgs list's Link rel="next" points at this URL. */
  foreignNext?: string;
}

function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Server> {
  const server = createServer(handler);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}
const url = (s: Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;

const input = (authorization?: string) => checkInput(authorization ? { headers: { authorization } } : {});

describe('GithubMethod against a stand-in for the GitHub REST API', () => {
  let github: Server;
  let elsewhere: Server;
  const hits = new Map<string, number>();
  const foreignHits: string[] = [];
  const tokens = new Map<string, StandInUser>();
  let snapshot: Snapshot;
  const method = new GithubMethod({ negativeCacheMs: 60_000 });
  const ctx = () => checkContext({ snapshot });
  const policy = (...providers: string[]) => routedPolicy({ providers });
  const identify = (token: string, ...providers: string[]) =>
    method.identify(input(`Bearer ${token}`), ctx(), policy(...providers));

  beforeAll(async () => {
    elsewhere = await listen((req, res) => {
      foreignHits.push(String(req.headers.authorization));
      res.end('[]');
    });
    github = await listen((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
      const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
        res.end(JSON.stringify(body));
      };
      hits.set(`${token} ${u.pathname}`, (hits.get(`${token} ${u.pathname}`) ?? 0) + 1);
      if (token === 'gho_ratelimited')
        return send(403, { message: 'API rate limit exceeded' }, { 'x-ratelimit-remaining': '0' });
      const who = tokens.get(token);
      if (!who)
        return send(401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' });
      if (u.pathname === '/user') return send(200, who.user);
      if (who.noReadOrg && u.pathname.startsWith('/user/'))
        return send(403, { message: 'Resource not accessible' });
      const perPage = Number(u.searchParams.get('per_page') ?? 30);
      const page = Number(u.searchParams.get('page') ?? 1);
      const paginate = (all: unknown[], path: string) => {
        const slice = all.slice((page - 1) * perPage, page * perPage);
        const hasNext = page * perPage < all.length;
        const next = who.foreignNext ?? `${url(github)}${path}?per_page=${perPage}&page=${page + 1}`;
        send(200, slice, hasNext || who.foreignNext ? { link: `<${next}>; rel="next"` } : {});
      };
      if (u.pathname === '/user/orgs')
        return paginate(
          who.orgs.map((login, i) => ({ login, id: 1000 + i, url: `https://api.github.com/orgs/${login}` })),
          '/user/orgs',
        );
      if (u.pathname === '/user/teams')
        return paginate(
          who.teams.map(([org, slug], i) => ({
            id: 2000 + i,
            slug,
            name: slug,
            organization: { login: org },
          })),
          '/user/teams',
        );
      send(404, { message: 'Not Found' });
    });
    const avatar = (id: number) => `https://avatars.githubusercontent.com/u/${id}?v=4`;
    const many = Array.from({ length: 149 }, (_, i) => `filler-${i}`);
    tokens.set('gho_octocat', {
      user: {
        login: 'octocat',
        id: 583231,
        email: 'octocat@github.com',
        name: 'The Octocat',
        avatar_url: avatar(583231),
      },
      orgs: [...many, 'Example-Org'], // the 150th org, on the second page
      teams: [['example-org', 'platform']],
    });
    tokens.set('gho_outsider', {
      user: { login: 'outsider', id: 42, email: null, name: null, avatar_url: avatar(42) },
      orgs: ['some-other-org'],
      teams: [['some-other-org', 'platform']],
    });
    tokens.set('gho_teamonly', {
      user: { login: 'teamie', id: 7, email: null, name: 'Team Member', avatar_url: avatar(7) },
      orgs: [],
      teams: [['partner-org', 'Auditors']],
    });
    tokens.set('gho_noreadorg', {
      user: { login: 'nr', id: 8, email: null, name: null, avatar_url: avatar(8) },
      orgs: [],
      teams: [],
      noReadOrg: true,
    });
    tokens.set('gho_leaky', {
      user: { login: 'leaky', id: 9, email: null, name: null, avatar_url: avatar(9) },
      orgs: ['nobody'],
      teams: [],
      foreignNext: `${url(elsewhere)}/user/orgs?page=2`,
    });

    const provider = (name: string, spec: Record<string, unknown>) => ({
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'OAuth2Provider',
      metadata: { name, namespace: 'team-a' },
      spec: { type: 'github', clientId: 'Iv1.0123456789abcdef', ...spec },
      origin: 'test',
    });
    snapshot = compileSnapshot(
      {
        resources: [
          provider('gh', { endpoints: { userinfo: url(github) } }),
          provider('gh-org', {
            endpoints: { userinfo: `${url(github)}/user` },
            github: { organizations: ['example-org'], teams: ['partner-org/auditors'] },
          }),
          provider('gh-down', { endpoints: { userinfo: 'http://127.0.0.1:9' } }),
        ],
        problems: [],
      },
      undefined,
      1,
    );
    expect(snapshot.rejected).toEqual([]);
    method.onSnapshot(snapshot);
  });
  afterAll(() => {
    github.closeAllConnections();
    github.close();
    elsewhere.close();
  });

  it('names the user by provider and numeric id, with profile claims, and caches the answer', async () => {
    const r = await identify('gho_octocat', 'gh');
    expect(r).toEqual({
      kind: 'identified',
      identity: {
        subject: 'gh:583231',
        provider: 'gh',
        method: 'opaque',
        email: 'octocat@github.com',
        emailVerified: false,
        groups: [],
        roles: [],
        scopes: [],
        claims: {
          sub: '583231',
          login: 'octocat',
          name: 'The Octocat',
          email: 'octocat@github.com',
          picture: 'https://avatars.githubusercontent.com/u/583231?v=4',
        },
      },
    });
    // Membership is not read when the provider requires none.
    expect(hits.get('gho_octocat /user/orgs')).toBeUndefined();
    await Promise.all(Array.from({ length: 20 }, () => identify('gho_octocat', 'gh')));
    expect(hits.get('gho_octocat /user')).toBe(1);
  });

  it('requires membership of an organization (across pages) or a team, case-insensitively', async () => {
    const r = await identify('gho_octocat', 'gh-org');
    expect(r.kind).toBe('identified');
    if (r.kind === 'identified') {
      expect(r.identity.subject).toBe('gh-org:583231');
      expect(r.identity.groups).toContain('Example-Org');
      expect(r.identity.groups).toContain('example-org/platform');
    }
    expect(hits.get('gho_octocat /user/orgs')).toBe(2);
    const team = await identify('gho_teamonly', 'gh-org');
    expect(team.kind === 'identified' && team.identity.groups).toEqual(['partner-org/Auditors']);
  });

  it('rejects a user outside the required organizations and teams, and a bad token (401)', async () => {
    expect(await identify('gho_outsider', 'gh-org')).toEqual({
      kind: 'invalid',
      reason: 'the user is not a member of a required organization or team',
    });
    // The same user passes where no membership is required: the verdict is per provider.
    expect((await identify('gho_outsider', 'gh')).kind).toBe('identified');
    expect(await identify('gho_bogus', 'gh')).toEqual({
      kind: 'invalid',
      reason: 'GitHub rejected the token',
    });
    await identify('gho_bogus', 'gh');
    expect(hits.get('gho_bogus /user')).toBe(1); // rejections are cached too
    expect((await identify('gho_noreadorg', 'gh-org')).kind).toBe('invalid');
  });

  it('is unavailable (a deny, not an anonymous pass) when GitHub is rate-limited or unreachable', async () => {
    const limited = await identify('gho_ratelimited', 'gh');
    expect(limited.kind).toBe('unavailable');
    expect(String((limited as { cause: Error }).cause.message)).toMatch(/rate limit/);
    expect((await identify('gho_octocat', 'gh-down')).kind).toBe('unavailable');
  });

  it('never follows a pagination link to another origin with the token', async () => {
    const r = await identify('gho_leaky', 'gh-org');
    expect(r.kind).toBe('invalid');
    expect(foreignHits).toEqual([]);
  });

  it('is absent without a bearer token, for a JWT, and on routes without a github provider', async () => {
    const jwtLike = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln';
    expect(await method.identify(input(), ctx(), policy('gh'))).toEqual({ kind: 'absent' });
    expect(await identify(jwtLike, 'gh')).toEqual({ kind: 'absent' });
    expect(hits.get(`${jwtLike} /user`)).toBeUndefined();
    expect(await identify('gho_octocat', 'not-a-provider')).toEqual({ kind: 'absent' });
  });
});
