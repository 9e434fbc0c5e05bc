import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../common/db/migrate.js';
import { KubeClient } from '../../common/kube/client.js';
import { loadKubeConfig } from '../../common/kube/config.js';
import { createLogger } from '../../common/logger.js';
import { RedisSessionStore } from '../../sidecar/login/redisSessionStore.js';
import { newSessionId, type SessionRecord, sessionHash } from '../../sidecar/login/sessionStore.js';
import { subjectHash } from '../../sidecar/quota/subject.js';
import { installCrds } from '../harness/crds.js';
import { httpCheck, SidecarClient } from '../harness/grpcClient.js';
import { type Kube, startKube } from '../harness/kube.js';
import { testLog } from '../harness/log.js';
import { type OidcIssuer, startOidcIssuer } from '../harness/oidc.js';
import { policyDir, writeSecret } from '../harness/policies.js';
import { freePort } from '../harness/ports.js';
import { type PostgresPair, pgQuery, startPostgresPair } from '../harness/postgres.js';
import { type Service, scratchDir, start, waitUntil } from '../harness/process.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { repoRoot } from '../harness/tools.js';

const kubectlNox = join(repoRoot, 'images', 'nox', 'bin', 'kubectl-nox.mjs');

/**
 * The admin API's usage, users, sessions and revocation endpoints against the real things
 * they read and change: a kube-apiserver (TokenReview, SubjectAccessReview, RBAC, the
 * QuotaPolicy), a PostgreSQL primary with a streaming replica (rollups, users, the audit of
 * admin actions), a Redis shared with a real sidecar, and that sidecar's decisions.
 */
const log = createLogger('admin-endpoints-test', { level: 'silent' });
const NS = 'nox-admin-endpoints-it';
const SESSION_COOKIE = '__Host-nox_session';

const quotaSpec = {
  mode: 'Enforce',
  failureMode: 'Closed',
  subject: [{ type: 'User' }],
  defaultTier: 'free',
  tiers: [
    {
      name: 'free',
      limits: [
        // A day's window for 100: one request comes back every 864 s, so nothing refills
        // between the sidecar's checks and the admin API's read.
        { name: 'rolling', requests: 100, window: '1d' },
        { name: 'daily', requests: 1000, calendar: 'Day' },
      ],
    },
  ],
  timeZone: 'UTC',
};

function policies(issuer: string, audience: string): string {
  return `apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: corp }
spec: ${JSON.stringify({ type: 'oidc', issuer, clientId: 'gw', audiences: [audience], allowedAlgorithms: ['RS256'] })}
---
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: web }
spec:
  type: oidc
  issuer: http://127.0.0.1:9
  clientId: web
  login:
    enabled: true
    callbackPath: /oauth2/callback
    encryptionKeySecretRef: { name: web-session, key: session-key }
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api }
spec:
  providers: [corp, web]
  rules: [{ name: signed-in, action: Allow, when: { authenticated: Authenticated } }]
  defaultAction: Deny
---
apiVersion: nox.dev/v1alpha1
kind: QuotaPolicy
metadata: { name: api-quota }
spec: ${JSON.stringify(quotaSpec)}
`;
}

let kube: Kube;
let kc: KubeClient;
let pair: PostgresPair;
let redis: RedisServer;
let op: OidcIssuer;
let sidecar: Sidecar;
let client: SidecarClient;
let sessions: RedisSessionStore;
let admin: Service;
let base: string;
const tokens: Record<string, string> = {};

async function api(path: string, who: string | undefined, init: RequestInit = {}): Promise<Response> {
  return fetch(`${base}${path}`, {
    ...init,
    headers: {
      ...(who ? { authorization: `Bearer ${tokens[who]}` } : {}),
      ...(init.body ? { 'content-type': 'application/json' } : {}),
      ...init.headers,
    },
  });
}
const json = async <T>(r: Response | Promise<Response>): Promise<T> => (await (await r).json()) as T;

/** The sidecar's answer: 200 when allowed, else the denied status; and the upstream headers. */
async function check(
  headers: Record<string, string>,
): Promise<{ status: number; headers: Map<string, string> }> {
  const r = await client.check(httpCheck('/api/items', { headers }));
  const status = r.deniedResponse ? (r.deniedResponse.status?.code ?? 0) : 200;
  return {
    status,
    headers: new Map((r.okResponse?.headers ?? []).map((h) => [h.header?.key ?? '', h.header?.value ?? ''])),
  };
}
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

describe('the admin API: usage, users, sessions, revocations', () => {
  beforeAll(async () => {
    [kube, pair, redis, op] = await Promise.all([
      startKube(),
      startPostgresPair({ synchronousStandby: true, synchronousCommit: 'remote_apply' }),
      startRedis({ appendonly: false }),
      startOidcIssuer([
        { clientId: 'app-a', secret: 'a' },
        { clientId: 'app-b', secret: 'b' },
        { clientId: 'app-c', secret: 'c' },
      ]),
    ]);
    kc = new KubeClient(await loadKubeConfig(kube.kubeconfigPath));
    const pool = new pg.Pool({ connectionString: pair.primary.connectionString, max: 1 });
    await migrate(pool, log);
    await pool.end();

    // The QuotaPolicy the sidecar enforces, in the API server too: the admin API reads its limits there.
    await installCrds(kube.kubeConfig());
    await kc.request('POST', '/apis/nox.dev/v1alpha1/namespaces/default/quotapolicies', {
      body: {
        apiVersion: 'nox.dev/v1alpha1',
        kind: 'QuotaPolicy',
        metadata: { name: 'api-quota' },
        spec: quotaSpec,
      },
    });

    // Callers: an operator with every verb of these endpoints, a viewer who may only read
    // (not users/get), and nobody.
    await kc.request('POST', '/api/v1/namespaces', { body: { metadata: { name: NS } } });
    for (const sa of ['operator', 'viewer', 'nobody']) {
      await kc.request('POST', `/api/v1/namespaces/${NS}/serviceaccounts`, {
        body: { metadata: { name: sa } },
      });
      const tr = await kc.request<{ status: { token: string } }>(
        'POST',
        `/api/v1/namespaces/${NS}/serviceaccounts/${sa}/token`,
        { body: { spec: { expirationSeconds: 3600 } } },
      );
      tokens[sa] = tr.status.token;
    }
    const role = (name: string, rules: object[], sa: string) =>
      Promise.all([
        kc.request('POST', '/apis/rbac.authorization.k8s.io/v1/clusterroles', {
          body: { metadata: { name }, rules },
        }),
        kc.request('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
          body: {
            metadata: { name },
            roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
            subjects: [{ kind: 'ServiceAccount', name: sa, namespace: NS }],
          },
        }),
      ]);
    await role(
      'nox-endpoints-operator',
      [
        { apiGroups: ['nox.dev'], resources: ['usage'], verbs: ['get'] },
        { apiGroups: ['nox.dev'], resources: ['users'], verbs: ['get', 'list'] },
        { apiGroups: ['nox.dev'], resources: ['sessions'], verbs: ['list', 'delete'] },
        { apiGroups: ['nox.dev'], resources: ['revocations'], verbs: ['list', 'create', 'delete'] },
      ],
      'operator',
    );
    await role(
      'nox-endpoints-viewer',
      [
        { apiGroups: ['nox.dev'], resources: ['usage'], verbs: ['get'] },
        { apiGroups: ['nox.dev'], resources: ['users', 'sessions', 'revocations'], verbs: ['list'] },
      ],
      'viewer',
    );

    // One sidecar on the same Redis (quotas, sessions, revocations) and database (rollups).
    const secretsDir = scratchDir('admin-endpoints-secrets');
    writeSecret(secretsDir, 'default', 'web-session', { 'session-key': randomBytes(32).toString('base64') });
    const redisNodes = `127.0.0.1:${redis.port}`;
    sidecar = await startSidecar({
      policyPath: policyDir('admin-endpoints', policies(op.issuer, op.audience)),
      env: {
        NOX_QUOTA_STORE: 'redis',
        NOX_SESSION_STORE: 'redis',
        NOX_REDIS_NODES: redisNodes,
        NOX_REDIS_WAIT_REPLICAS: '0',
        NOX_SECRETS_DIR: secretsDir,
        NOX_DATABASE_URL: pair.primary.connectionString,
        NOX_AUDIT: 'Off',
        // What is measured is how fast a revocation spreads, not check latency: a first check
        // fetches JWKS, which on a busy machine can outlast the production deadline.
        NOX_CHECK_DEADLINE_MS: '2000',
      },
    });
    client = new SidecarClient(sidecar.grpcPort);
    // The store the sidecars' login writes sessions through: the test's sessions are real ones.
    sessions = new RedisSessionStore({
      nodes: [{ host: '127.0.0.1', port: redis.port }],
      cluster: false,
      timeoutMs: 1000,
      log,
    });
    await sessions.ready();

    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    admin = start('nox-admin', process.execPath, [join(repoRoot, 'dist', 'admin', 'main.js')], {
      env: {
        NOX_ADMIN_PORT: String(port),
        NOX_DATABASE_URL: pair.primary.connectionString,
        NOX_DATABASE_READ_URL: pair.replica.connectionString,
        NOX_KUBECONFIG: kube.kubeconfigPath,
        NOX_ADMIN_AUTH_CACHE_MS: '1000',
        NOX_QUOTA_STORE: 'redis',
        NOX_SESSION_STORE: 'redis',
        NOX_REDIS_NODES: redisNodes,
      },
    });
    await waitUntil('nox-admin /readyz', async () => (await fetch(`${base}/readyz`)).ok, 30_000, admin);
  }, 600_000);

  afterAll(async () => {
    client?.close();
    await sessions?.close();
    await Promise.all([admin?.stop(), sidecar?.stop()]);
    await Promise.all([pair?.stop(), redis?.stop(), kube?.stop(), op?.close()]);
  });

  it('describes every new route in its OpenAPI document', async () => {
    const doc = await json<{ paths: Record<string, Record<string, unknown>> }>(fetch(`${base}/openapi.json`));
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/v1/usage',
        '/v1/users',
        '/v1/users/{id}',
        '/v1/sessions',
        '/v1/sessions/{hash}',
        '/v1/revocations',
        '/v1/revocations/{id}',
      ]),
    );
    expect(Object.keys(doc.paths['/v1/revocations']!).sort()).toEqual(['get', 'post']);
    expect(Object.keys(doc.paths['/v1/revocations/{id}']!)).toEqual(['delete']);
    expect(Object.keys(doc.paths['/v1/sessions/{hash}']!)).toEqual(['delete']);
  });

  it('refuses each endpoint without its RBAC verb on nox.dev', async () => {
    const hash = '0'.repeat(64);
    const routes: { path: string; init?: RequestInit; verb: string; resource: string }[] = [
      { path: '/v1/usage?subjectHash=AAAAAAAAAAAAAAAAAAAAAA', verb: 'get', resource: 'usage' },
      { path: '/v1/users', verb: 'list', resource: 'users' },
      { path: '/v1/users/00000000-0000-0000-0000-000000000000', verb: 'get', resource: 'users' },
      { path: '/v1/sessions?subject=web:carol', verb: 'list', resource: 'sessions' },
      { path: `/v1/sessions/${hash}`, init: { method: 'DELETE' }, verb: 'delete', resource: 'sessions' },
      { path: '/v1/revocations', verb: 'list', resource: 'revocations' },
      {
        path: '/v1/revocations',
        init: { method: 'POST', body: JSON.stringify({ kind: 'subject', value: 'corp:nobody-cares' }) },
        verb: 'create',
        resource: 'revocations',
      },
      {
        path: '/v1/revocations/block:AAAAAAAAAAAAAAAAAAAAAA',
        init: { method: 'DELETE' },
        verb: 'delete',
        resource: 'revocations',
      },
    ];
    for (const r of routes) {
      expect((await api(r.path, undefined, r.init)).status, `${r.path} anonymous`).toBe(401);
      const refused = await api(r.path, 'nobody', r.init);
      expect(refused.status, `${r.path} nobody`).toBe(403);
      expect((await json<{ message: string }>(refused)).message).toContain(
        `system:serviceaccount:${NS}:nobody may not ${r.verb} ${r.resource}.nox.dev`,
      );
    }
    // The viewer reads, and is refused each verb it lacks.
    for (const r of routes.filter((x) => x.verb === 'list' || x.verb === 'get')) {
      const status = (await api(r.path, 'viewer', r.init)).status;
      if (r.resource === 'users' && r.verb === 'get') expect(status, r.path).toBe(403);
      else expect(status, r.path).toBe(200);
    }
    for (const r of routes.filter((x) => x.verb === 'delete' || x.verb === 'create'))
      expect((await api(r.path, 'viewer', r.init)).status, `${r.path} viewer`).toBe(403);
    // Nothing refused was done: no admin action recorded.
    const actions = await pgQuery(pair.primary, 'SELECT 1 FROM audit_admin_actions');
    expect(actions).toHaveLength(0);
  });

  it('reports a subject’s usage from the rollups, and its live remaining quota from Redis', async () => {
    const token = await op.token('app-a');
    let last: Map<string, string> | undefined;
    for (let i = 0; i < 3; i++) {
      const r = await check(bearer(token));
      expect(r.status).toBe(200);
      last = r.headers;
    }
    const parts = ['User=corp:app-a'];
    const q = `subject=${encodeURIComponent(parts[0]!)}&policy=default/api-quota`;
    interface Usage {
      subjectHash: string;
      totals: { policy: string; tier: string; requests: number; denied: number; cost: number }[];
      hours: { hour: string; requests: number }[];
      live: {
        policy: string;
        tiers: { tier: string; limits: { name: string; remaining: number; requests: number }[] }[];
      };
      servedBy: string;
    }
    // Live: what the sidecar's counters hold now; the sidecar said the same in its header.
    const now = await json<Usage>(api(`/v1/usage?${q}`, 'viewer'));
    expect(now.subjectHash).toBe(subjectHash(parts));
    expect(now.live.tiers).toEqual([
      {
        tier: 'free',
        limits: [
          expect.objectContaining({ name: 'rolling', requests: 100, remaining: 97 }),
          expect.objectContaining({ name: 'daily', requests: 1000, remaining: 997 }),
        ],
      },
    ]);
    expect(Number(last!.get('x-nox-quota-remaining'))).toBe(97);

    // The rollups: the sidecar flushes every 10 s; the replica answers.
    let usage: Usage | undefined;
    await waitUntil(
      'the rollup of 3 requests, read from the replica',
      async () => {
        usage = await json<Usage>(api(`/v1/usage?${q}`, 'viewer'));
        return usage.totals[0]?.requests === 3;
      },
      30_000,
      { svc: sidecar.service, intervalMs: 500 },
    );
    expect(usage!.servedBy).toBe('replica');
    expect(usage!.totals).toEqual([
      { policy: 'default/api-quota', tier: 'free', requests: 3, denied: 0, cost: 3 },
    ]);
    const [row] = await pgQuery<{ requests: string }>(
      pair.primary,
      'SELECT requests::text FROM quota_usage_hourly WHERE subject_hash = $1',
      [subjectHash(parts)],
    );
    expect(row?.requests).toBe('3');
    // By hash, without a policy: the same sums, and no live part.
    const byHash = await json<Usage & { liveUnavailable: string }>(
      api(`/v1/usage?subjectHash=${subjectHash(parts)}`, 'viewer'),
    );
    expect(byHash.totals).toEqual(usage!.totals);
    expect(byHash.live).toBeNull();
    expect(byHash.liveUnavailable).toBe('no policy named');
    // Both or neither subject form is a bad request.
    expect((await api(`/v1/usage?${q}&subjectHash=${subjectHash(parts)}`, 'viewer')).status).toBe(400);
  });

  it('lists users newest first in keyset pages, filters, and shows linked accounts', async () => {
    // Providers of their own: the sidecar has written the users it saw (ProfileSync) beside them.
    await pgQuery(
      pair.primary,
      `INSERT INTO users (provider, subject, email, email_verified, created_at)
       SELECT CASE WHEN g % 2 = 0 THEN 'people/corp' ELSE 'people/web' END, 'user-' || g,
              'user-' || (g % 50) || '@example.test', true, timestamptz '2031-01-01' + g * interval '1 minute'
         FROM generate_series(1, 230) g`,
    );
    // user-1 (web) is the same person as user-51 and user-101 (both web, linked to it) and ...
    await pgQuery(
      pair.primary,
      `UPDATE users SET linked_user_id = (SELECT id FROM users WHERE subject = 'user-1')
        WHERE subject IN ('user-51', 'user-101')`,
    );
    await pair.waitForReplay();
    interface User {
      id: string;
      subject: string;
      provider: string;
      email: string;
      linkedUserId: string | null;
    }
    const seen: User[] = [];
    let cursor: string | null = null;
    do {
      const page: { items: User[]; nextCursor: string | null; servedBy: string } = await json(
        api(`/v1/users?provider=people/corp&limit=40${cursor ? `&cursor=${cursor}` : ''}`, 'viewer'),
      );
      expect(page.servedBy).toBe('replica');
      seen.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor);
    const expected = await pgQuery<{ id: string }>(
      pair.primary,
      `SELECT id::text FROM users WHERE provider = 'people/corp' ORDER BY created_at DESC, id DESC`,
    );
    expect(expected).toHaveLength(115);
    expect(seen.map((u) => u.id)).toEqual(expected.map((e) => e.id));

    // And the users the sidecar itself wrote (ProfileSync) for the callers it identified.
    await waitUntil(
      'the sidecar’s own users, listed',
      async () =>
        (await json<{ items: User[] }>(api('/v1/users?provider=default/corp', 'viewer'))).items.some(
          (u) => u.subject === 'app-a',
        ),
      10_000,
    );

    const byEmail = await json<{ items: User[] }>(api('/v1/users?email=USER-1@example.test', 'viewer'));
    expect(byEmail.items.map((u) => u.subject).sort()).toEqual([
      'user-1',
      'user-101',
      'user-151',
      'user-201',
      'user-51',
    ]);

    const root = byEmail.items.find((u) => u.subject === 'user-1')!;
    const leaf = byEmail.items.find((u) => u.subject === 'user-51')!;
    const one = await json<{ user: User; linkedAccounts: User[] }>(api(`/v1/users/${leaf.id}`, 'operator'));
    expect(one.user).toMatchObject({ subject: 'user-51', linkedUserId: root.id });
    expect(one.linkedAccounts.map((u) => u.subject)).toEqual(['user-1', 'user-101']);
    const ofRoot = await json<{ linkedAccounts: User[] }>(api(`/v1/users/${root.id}`, 'operator'));
    expect(ofRoot.linkedAccounts.map((u) => u.subject)).toEqual(['user-51', 'user-101']);
    expect((await api('/v1/users/00000000-0000-0000-0000-000000000000', 'operator')).status).toBe(404);
    expect((await api('/v1/users?cursor=bm90LWEtY3Vyc29y', 'viewer')).status).toBe(400);
  });

  it('lists a subject’s sessions by hash only, and ending one makes the sidecar refuse its cookie', async () => {
    const now = Date.now();
    const record = (subject: string): SessionRecord => ({
      v: 1,
      provider: 'default/web',
      subject,
      claims: { sub: subject.slice('web:'.length), email: `${subject}@example.test` },
      scopes: ['openid', 'email'],
      tokens: 'sealed-tokens-never-shown',
      hasRefreshToken: false,
      accessExpiresAt: 0,
      createdAt: now,
      expiresAt: now + 3_600_000,
    });
    const ids = [newSessionId(), newSessionId(), newSessionId()];
    await sessions.create(sessionHash(ids[0]!), record('web:carol'), 3_600_000);
    await sessions.create(sessionHash(ids[1]!), record('web:carol'), 3_600_000);
    await sessions.create(sessionHash(ids[2]!), record('web:dave'), 3_600_000);
    const cookie = (id: string) => ({ cookie: `${SESSION_COOKIE}=${id}` });
    for (const id of ids) expect((await check(cookie(id))).status).toBe(200);

    const r = await api('/v1/sessions?subject=web:carol', 'viewer');
    expect(r.status).toBe(200);
    const text = await r.text();
    // Hashes only: neither the cookie's id nor anything sealed or claimed leaves the store.
    for (const id of ids) expect(text).not.toContain(id);
    expect(text).not.toContain('sealed-tokens-never-shown');
    expect(text).not.toContain('@example.test');
    const listed = (JSON.parse(text) as { items: { hash: string; subject: string; provider: string }[] })
      .items;
    expect(listed.map((s) => s.hash).sort()).toEqual([sessionHash(ids[0]!), sessionHash(ids[1]!)].sort());
    expect(new Set(listed.map((s) => `${s.provider} ${s.subject}`))).toEqual(
      new Set(['default/web web:carol']),
    );

    const t0 = performance.now();
    expect((await api(`/v1/sessions/${sessionHash(ids[0]!)}`, 'operator', { method: 'DELETE' })).status).toBe(
      204,
    );
    await waitUntil(
      'the sidecar refuses the ended session',
      async () => (await check(cookie(ids[0]!))).status !== 200,
      1000,
      {
        intervalMs: 20,
      },
    );
    const endedMs = Math.round(performance.now() - t0);
    // Denied as anonymous now (the policy's defaultAction), while the others still pass.
    expect((await check(cookie(ids[0]!))).status).toBe(403);
    expect((await check(cookie(ids[1]!))).status).toBe(200);
    expect((await check(cookie(ids[2]!))).status).toBe(200);
    const after = await json<{ items: { hash: string }[] }>(api('/v1/sessions?subject=web:carol', 'viewer'));
    expect(after.items.map((s) => s.hash)).toEqual([sessionHash(ids[1]!)]);
    expect((await api(`/v1/sessions/${sessionHash(ids[0]!)}`, 'operator', { method: 'DELETE' })).status).toBe(
      404,
    );

    // The same through POST /v1/revocations (kind session).
    const t1 = performance.now();
    const revoked = await api('/v1/revocations', 'operator', {
      method: 'POST',
      body: JSON.stringify({ kind: 'session', value: sessionHash(ids[2]!), reason: 'lost laptop' }),
    });
    expect(revoked.status).toBe(201);
    await waitUntil(
      'the sidecar refuses the revoked session',
      async () => (await check(cookie(ids[2]!))).status !== 200,
      1000,
      {
        intervalMs: 20,
      },
    );
    const revokedMs = Math.round(performance.now() - t1);
    testLog('session ended on the sidecar', { endedMs, revokedMs });

    const actions = await pgQuery<{
      actor: string;
      action: string;
      target: string;
      before: { subject: string };
      after: unknown;
    }>(
      pair.primary,
      `SELECT actor, action, target, before, after FROM audit_admin_actions WHERE action = 'session.delete' ORDER BY occurred_at`,
    );
    expect(actions).toEqual([
      {
        actor: `system:serviceaccount:${NS}:operator`,
        action: 'session.delete',
        target: `session:${sessionHash(ids[0]!)}`,
        before: expect.objectContaining({ subject: 'web:carol', provider: 'default/web' }),
        after: null,
      },
      expect.objectContaining({
        target: `session:${sessionHash(ids[2]!)}`,
        before: expect.objectContaining({ subject: 'web:dave' }),
        after: { reason: 'lost laptop' },
      }),
    ]);
    expect(JSON.stringify(actions)).not.toContain('sealed-tokens-never-shown');
    // The session log has them too, as sessions revoked by whom.
    const events = await pgQuery<{
      kind: string;
      subject: string;
      session_hash: string;
      sidecar: string;
      by: string;
    }>(
      pair.primary,
      `SELECT kind, subject, session_hash, sidecar, detail->>'by' AS by FROM audit_session_events WHERE kind = 'revocation' ORDER BY occurred_at`,
    );
    expect(events).toEqual([
      {
        kind: 'revocation',
        subject: 'web:carol',
        session_hash: sessionHash(ids[0]!),
        sidecar: 'nox-admin',
        by: `system:serviceaccount:${NS}:operator`,
      },
      expect.objectContaining({
        kind: 'revocation',
        subject: 'web:dave',
        session_hash: sessionHash(ids[2]!),
      }),
    ]);
  });

  it('revokes a subject and a token: the sidecar refuses them within 1 s, each an audited action', async () => {
    const b = await op.token('app-b');
    const c = await op.token('app-c');
    expect((await check(bearer(b))).status).toBe(200);
    expect((await check(bearer(c))).status).toBe(200);

    const t0 = performance.now();
    const made = await api('/v1/revocations', 'operator', {
      method: 'POST',
      body: JSON.stringify({ kind: 'subject', value: 'corp:app-b', reason: 'offboarded' }),
    });
    expect(made.status).toBe(201);
    await waitUntil(
      'the sidecar refuses the revoked subject',
      async () => (await check(bearer(b))).status === 401,
      1000,
      {
        intervalMs: 20,
      },
    );
    const subjectMs = Math.round(performance.now() - t0);
    // Every token of that subject: a new one too.
    expect((await check(bearer(await op.token('app-b')))).status).toBe(401);

    const t1 = performance.now();
    const tokenMade = await api('/v1/revocations', 'operator', {
      method: 'POST',
      body: JSON.stringify({ kind: 'token', value: c }),
    });
    expect(tokenMade.status).toBe(201);
    await waitUntil(
      'the sidecar refuses the revoked token',
      async () => (await check(bearer(c))).status === 401,
      1000,
      {
        intervalMs: 20,
      },
    );
    const tokenMs = Math.round(performance.now() - t1);
    testLog('revocation on the sidecar', { subjectMs, tokenMs });
    expect(subjectMs).toBeLessThan(1000);
    expect(tokenMs).toBeLessThan(1000);
    // Only that token: another of the same client still passes.
    expect((await check(bearer(await op.token('app-c')))).status).toBe(200);

    const tokenHash = createHash('sha256').update(c).digest('base64url');
    const entry = await json<{ id: string; until: string }>(tokenMade);
    expect(entry.id).toBe(`token:${tokenHash}`);
    // A JWT's entry lasts as long as the token could be used (its exp plus skew), not 30 days.
    expect(Date.parse(entry.until)).toBeLessThan(Date.now() + 86_400_000);

    const list = await json<{ items: { id: string; kind: string }[] }>(api('/v1/revocations', 'viewer'));
    expect(list.items.map((i) => i.id).sort()).toEqual(['subject:corp:app-b', `token:${tokenHash}`]);
    const tokensOnly = await json<{ items: { id: string }[] }>(api('/v1/revocations?kind=token', 'viewer'));
    expect(tokensOnly.items.map((i) => i.id)).toEqual([`token:${tokenHash}`]);
    // The token itself is nowhere: not in the answers, not in the audit log.
    expect(JSON.stringify(list)).not.toContain(c);

    const bad = await api('/v1/revocations', 'operator', {
      method: 'POST',
      body: JSON.stringify({ kind: 'subject', value: 'corp:x', until: '2001-01-01T00:00:00Z' }),
    });
    expect(bad.status).toBe(400);

    const actions = await pgQuery<{
      action: string;
      target: string;
      before: unknown;
      after: { until: string; reason?: string };
    }>(
      pair.primary,
      `SELECT action, target, before, after FROM audit_admin_actions WHERE action = 'revocation.create' ORDER BY occurred_at`,
    );
    expect(actions).toEqual([
      {
        action: 'revocation.create',
        target: 'subject:corp:app-b',
        before: null,
        after: { id: 'subject:corp:app-b', until: expect.any(String), reason: 'offboarded' },
      },
      {
        action: 'revocation.create',
        target: `token:${tokenHash}`,
        before: null,
        after: { id: `token:${tokenHash}`, until: entry.until },
      },
    ]);
    expect(JSON.stringify(actions)).not.toContain(c);
    // Revocations are security events as well; a token appears there by hash only.
    const security = await pgQuery<{
      kind: string;
      subject: string | null;
      provider: string | null;
      reason: string | null;
      detail: { id: string };
    }>(
      pair.primary,
      `SELECT kind, subject, provider, reason, detail FROM audit_security_events WHERE kind = 'revocation' ORDER BY occurred_at`,
    );
    expect(security.slice(0, 2)).toEqual([
      {
        kind: 'revocation',
        subject: 'corp:app-b',
        provider: 'corp',
        reason: 'offboarded',
        detail: expect.objectContaining({ id: 'subject:corp:app-b' }),
      },
      {
        kind: 'revocation',
        subject: null,
        provider: null,
        reason: null,
        detail: expect.objectContaining({ id: `token:${tokenHash}` }),
      },
    ]);
    expect(JSON.stringify(security)).not.toContain(c);

    // Revoking again records what it replaced.
    await api('/v1/revocations', 'operator', {
      method: 'POST',
      body: JSON.stringify({ kind: 'subject', value: 'corp:app-b' }),
    });
    const [again] = await pgQuery<{ before: { until: string } }>(
      pair.primary,
      `SELECT before FROM audit_admin_actions WHERE action = 'revocation.create' ORDER BY occurred_at DESC LIMIT 1`,
    );
    expect(again?.before.until).toBe(actions[0]!.after.until);

    // Lifted: every sidecar lets the subject in again within a second, audited with what it lifted.
    const t2 = performance.now();
    const lifted = await api('/v1/revocations/subject:corp:app-b?reason=back', 'operator', {
      method: 'DELETE',
    });
    expect(lifted.status).toBe(204);
    await waitUntil(
      'the sidecar accepts the subject again',
      async () => (await check(bearer(b))).status === 200,
      1000,
      {
        intervalMs: 20,
      },
    );
    testLog('lifted on the sidecar', { ms: Math.round(performance.now() - t2) });
    const [liftAction] = await pgQuery<{
      target: string;
      before: { until: string };
      after: { reason: string };
    }>(
      pair.primary,
      `SELECT target, before, after FROM audit_admin_actions WHERE action = 'revocation.delete'`,
    );
    expect(liftAction).toMatchObject({ target: 'subject:corp:app-b', after: { reason: 'back' } });
    expect((await api('/v1/revocations/subject:corp:app-b', 'operator', { method: 'DELETE' })).status).toBe(
      404,
    );
    const remaining = await json<{ items: { id: string }[] }>(api('/v1/revocations', 'viewer'));
    expect(remaining.items.map((i) => i.id)).toEqual([`token:${tokenHash}`]);
  });
  it('kubectl nox usage, revoke and sessions call these endpoints with the caller’s token, and RBAC decides', async () => {
    const run = (...args: string[]) =>
      promisify(execFile)(process.execPath, [kubectlNox, ...args, '--admin-url', base], {
        env: { ...process.env, NOX_ADMIN_TOKEN: tokens.operator! },
      });
    const usage = await run('usage', '--subject', 'User=corp:app-a', '--policy', 'default/api-quota');
    expect(usage.stdout).toMatch(/default\/api-quota tier free: \d+ requests \(0 denied\)/);
    expect(usage.stdout).toMatch(/now: default\/api-quota tier free limit \S+: \d+ of \d+ left/);

    const a = await op.token('app-a');
    expect((await check(bearer(a))).status).toBe(200);
    const revoked = await run('revoke', '--subject', 'corp:app-a', '--reason', 'from the plugin');
    expect(revoked.stdout).toBe('revoked subject corp:app-a\n');
    await waitUntil(
      'the sidecar refuses the subject revoked by kubectl nox',
      async () => (await check(bearer(a))).status === 401,
      1000,
      {
        intervalMs: 20,
      },
    );
    expect((await run('revoke', '--list')).stdout).toContain('subject:corp:app-a');
    const lifted = await run('revoke', '--lift', 'subject:corp:app-a', '--reason', 'from the plugin');
    expect(lifted.stdout).toBe('lifted subject:corp:app-a\n');
    await waitUntil(
      'the sidecar accepts the subject lifted by kubectl nox',
      async () => (await check(bearer(a))).status === 200,
      1000,
      {
        intervalMs: 20,
      },
    );
    expect((await run('sessions', 'list', '--subject', 'corp:nobody-here')).stdout).toBe('');
    // The caller is who the token says: one without the verb is refused, with the API's reason.
    await expect(
      promisify(execFile)(
        process.execPath,
        [kubectlNox, 'revoke', '--subject', 'corp:x', '--admin-url', base],
        {
          env: { ...process.env, NOX_ADMIN_TOKEN: tokens.nobody! },
        },
      ),
    ).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining('403 Forbidden') });
  });
});
