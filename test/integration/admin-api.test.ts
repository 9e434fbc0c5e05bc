import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../common/db/migrate.js';
import { KubeClient } from '../../common/kube/client.js';
import { loadKubeConfig } from '../../common/kube/config.js';
import { createLogger } from '../../common/logger.js';
import { subjectHash } from '../../sidecar/quota/subject.js';
import { screenshot, startChromium } from '../harness/chromium.js';
import { type Kube, startKube } from '../harness/kube.js';
import { testLog } from '../harness/log.js';
import { type OidcIssuer, startOidcIssuer } from '../harness/oidc.js';
import { openPolicy, policyDir } from '../harness/policies.js';
import { freePort } from '../harness/ports.js';
import { type PostgresPair, pgQuery, startPostgresPair } from '../harness/postgres.js';
import { type Service, start, waitUntil } from '../harness/process.js';
import { startSidecar } from '../harness/sidecar.js';
import { repoRoot } from '../harness/tools.js';

/**
 * The admin API against a real API server (TokenReview, SubjectAccessReview, RBAC) and a real
 * PostgreSQL primary with a streaming replica: what each endpoint answers, who may ask, where
 * reads are served, and an export of a million rows in flat memory.
 */
const log = createLogger('admin-api-test', { level: 'silent' });
const NS = 'nox-admin-it';
const ROWS = 1_000_000;
const T0 = Date.UTC(2031, 0, 1); // the rows' day; partitions made by nox_audit_maintain

let kube: Kube;
let kc: KubeClient;
let pair: PostgresPair;
let admin: Service;
let op: OidcIssuer;
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

describe('the admin API', () => {
  beforeAll(async () => {
    [kube, pair] = await Promise.all([
      startKube(),
      startPostgresPair({ synchronousStandby: true, synchronousCommit: 'remote_apply' }),
    ]);
    kc = new KubeClient(await loadKubeConfig(kube.kubeconfigPath));
    const pool = new pg.Pool({ connectionString: pair.primary.connectionString, max: 1 });
    await migrate(pool, log);
    await pool.query('SELECT nox_audit_maintain(0, $1)', [new Date(T0)]);
    // A million decisions over one day: a tenth denied, subjects in a thousand.
    await pool.query(
      `INSERT INTO audit_decisions (id, occurred_at, sidecar, host, method, path, policy, rule, subject, decision, code, quota_tier, latency_us)
       SELECT gen_random_uuid(), $1::timestamptz + (g * interval '86 milliseconds'), 'sidecar-' || (g % 3),
              'api.example.com', 'GET', '/v1/items/' || (g % 500), 'default/api',
              CASE WHEN g % 10 = 0 THEN 'no-admin' ELSE 'signed-in' END,
              'corp:user-' || (g % 1000),
              CASE WHEN g % 10 = 0 THEN 'deny' ELSE 'allow' END,
              CASE WHEN g % 10 = 0 THEN 'ACCESS_DENIED' ELSE 'ok' END,
              CASE WHEN g % 2 = 0 THEN 'free' ELSE 'pro' END, 100 + g % 900
         FROM generate_series(0, ${ROWS - 1}) g`,
      [new Date(T0)],
    );
    await pool.end();
    await pair.waitForReplay(120_000);

    // Callers: ServiceAccounts with real tokens; RBAC on nox.dev's admin resources.
    await kc.request('POST', '/api/v1/namespaces', { body: { metadata: { name: NS } } });
    for (const sa of ['auditor', 'quota-admin', 'nobody']) {
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
      'nox-auditor',
      [{ apiGroups: ['nox.dev'], resources: ['auditevents', 'auditevents/export'], verbs: ['list'] }],
      'auditor',
    );
    await role(
      'nox-quota-admin',
      [{ apiGroups: ['nox.dev'], resources: ['quotaoverrides'], verbs: ['list', 'create', 'delete'] }],
      'quota-admin',
    );

    // Callers of an OpenID issuer too: RBAC binds its group, prefixed oidc:.
    op = await startOidcIssuer([
      { clientId: 'dana', secret: 'd', claims: { groups: ['auditors'] } },
      { clientId: 'eve', secret: 'e', claims: { groups: ['visitors'] } },
    ]);
    await kc.request('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
      body: {
        metadata: { name: 'nox-auditor-oidc' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'nox-auditor' },
        subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'nox-admin-oidc:auditors' }],
      },
    });

    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    admin = start('nox-admin', process.execPath, [join(repoRoot, 'dist', 'admin', 'main.js')], {
      env: {
        NOX_ADMIN_PORT: String(port),
        NOX_DATABASE_URL: pair.primary.connectionString,
        NOX_DATABASE_READ_URL: pair.replica.connectionString,
        NOX_KUBECONFIG: kube.kubeconfigPath,
        NOX_ADMIN_AUTH_CACHE_MS: '1000',
        NOX_ADMIN_OIDC_ISSUER: op.issuer,
        NOX_ADMIN_OIDC_AUDIENCE: op.audience,
        NOX_ADMIN_OIDC_GROUP: 'auditors',
      },
    });
    await waitUntil('nox-admin /readyz', async () => (await fetch(`${base}/readyz`)).ok, 30_000, admin);
  }, 600_000);

  afterAll(async () => {
    await admin?.stop();
    await op?.close();
    await pair?.stop();
    await kube?.stop();
  });

  it('serves its OpenAPI 3.1 document, and refuses what it does not describe', async () => {
    const doc = (await (await fetch(`${base}/openapi.json`)).json()) as {
      openapi: string;
      paths: Record<string, Record<string, unknown>>;
    };
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths).sort()).toEqual([
      '/v1/audit/decisions',
      '/v1/audit/export',
      '/v1/audit/stats',
      '/v1/overrides',
      '/v1/overrides/{id}',
      '/v1/revocations',
      '/v1/revocations/{id}',
      '/v1/sessions',
      '/v1/sessions/{hash}',
      '/v1/usage',
      '/v1/users',
      '/v1/users/{id}',
    ]);
    for (const bad of ['limit=0', 'decision=maybe', 'from=yesterday', 'pathPrefix=no-slash', 'colour=blue']) {
      const r = await api(`/v1/audit/decisions?${bad}`, 'auditor');
      expect(r.status, bad).toBe(400);
      expect(((await r.json()) as { error: string }).error).toBe('BadRequest');
    }
  });

  it('authenticates with TokenReview and authorizes with RBAC on nox.dev resources', async () => {
    const search = '/v1/audit/decisions?limit=1';
    expect((await api(search, undefined)).status).toBe(401);
    expect(
      (await fetch(`${base}${search}`, { headers: { authorization: 'Bearer not-a-token' } })).status,
    ).toBe(401);
    const refused = await api(search, 'nobody');
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { message: string }).message).toContain(
      `system:serviceaccount:${NS}:nobody may not list auditevents.nox.dev`,
    );
    expect((await api(search, 'quota-admin')).status).toBe(403);
    expect((await api(search, 'auditor')).status).toBe(200);
    expect((await api('/v1/overrides', 'auditor')).status).toBe(403);
    expect((await api('/v1/overrides', 'quota-admin')).status).toBe(200);
  });

  it('authenticates OpenID callers of the configured issuer and group, and RBAC decides for them too', async () => {
    const dana = await op.token('dana');
    const asDana = (path: string, init: RequestInit = {}) =>
      fetch(`${base}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${dana}`, 'content-type': 'application/json' },
      });
    expect((await asDana('/v1/audit/decisions?limit=1')).status).toBe(200);
    // Bound as a reader only: the override is refused, by name.
    const put = await asDana('/v1/overrides', {
      method: 'PUT',
      body: JSON.stringify({ subject: ['User=corp:x'], policy: 'default/api', tier: 'pro' }),
    });
    expect(put.status).toBe(403);
    expect(((await put.json()) as { message: string }).message).toContain(
      'nox-admin-oidc:dana may not create quotaoverrides',
    );
    // Not in the required group: not authenticated at all.
    const eve = await fetch(`${base}/v1/audit/decisions?limit=1`, {
      headers: { authorization: `Bearer ${await op.token('eve')}` },
    });
    expect(eve.status).toBe(401);
    expect(((await eve.json()) as { message: string }).message).toContain('not in group auditors');
    // A token of that issuer with a bad signature is no caller either.
    const forged = `${dana.slice(0, dana.lastIndexOf('.'))}.${'A'.repeat(64)}`;
    expect(
      (await fetch(`${base}/v1/audit/decisions`, { headers: { authorization: `Bearer ${forged}` } })).status,
    ).toBe(401);
  });

  it('searches newest first with filters and keyset pages, served by the replica', async () => {
    const from = new Date(T0).toISOString();
    const to = new Date(T0 + 3_600_000).toISOString();
    const q = `from=${from}&to=${to}&decision=deny&subject=corp:user-10&limit=7`;
    const seen: { id: string; occurred_at: string; subject: string; code: string }[] = [];
    let cursor: string | null = null;
    do {
      const r = await api(`/v1/audit/decisions?${q}${cursor ? `&cursor=${cursor}` : ''}`, 'auditor');
      expect(r.status).toBe(200);
      const page = (await r.json()) as { items: typeof seen; nextCursor: string | null; servedBy: string };
      expect(page.servedBy).toBe('replica');
      seen.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor);
    // Every matching row once, in order: what SQL says directly.
    const expected = await pgQuery<{ id: string }>(
      pair.primary,
      `SELECT id::text FROM audit_decisions WHERE occurred_at >= $1 AND occurred_at < $2 AND decision = 'deny'
         AND subject = 'corp:user-10' ORDER BY occurred_at DESC, id DESC`,
      [from, to],
    );
    expect(expected.length).toBeGreaterThan(7);
    expect(seen.map((s) => s.id)).toEqual(expected.map((e) => e.id));
    expect(new Set(seen.map((s) => `${s.subject} ${s.code}`))).toEqual(
      new Set(['corp:user-10 ACCESS_DENIED']),
    );
    // The replica answered: its pg_stat_activity shows the admin API's read pool.
    const onReplica = await pgQuery<{ n: string }>(
      pair.replica,
      "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'nox-admin-read'",
    );
    expect(Number(onReplica[0]!.n)).toBeGreaterThan(0);
  });

  it('counts decisions per bucket by decision, code and tier', async () => {
    const from = new Date(T0).toISOString();
    const to = new Date(T0 + 2 * 3_600_000).toISOString();
    const r = await api(`/v1/audit/stats?from=${from}&to=${to}&bucket=hour`, 'auditor');
    const { buckets } = (await r.json()) as {
      buckets: { start: string; decision: string; code: string; tier: string; count: number }[];
    };
    const total = buckets.reduce((n, b) => n + b.count, 0);
    const [direct] = await pgQuery<{ n: number }>(
      pair.primary,
      'SELECT count(*)::int AS n FROM audit_decisions WHERE occurred_at >= $1 AND occurred_at < $2',
      [from, to],
    );
    expect(total).toBe(direct!.n);
    expect(new Set(buckets.map((b) => b.start))).toEqual(
      new Set([from, new Date(T0 + 3_600_000).toISOString()].map((s) => s.replace('.000Z', '+00:00'))),
    );
    expect(new Set(buckets.map((b) => `${b.decision}/${b.code}`))).toEqual(
      new Set(['allow/ok', 'deny/ACCESS_DENIED']),
    );
  });

  it(`exports ${ROWS} rows as gzipped NDJSON, streamed, with the admin API staying under 150 MB`, async () => {
    const before = rssMiB(admin);
    const t0 = performance.now();
    const r = await api(
      `/v1/audit/export?format=ndjson&gzip=true&from=${new Date(T0).toISOString()}&to=${new Date(T0 + 86_400_000).toISOString()}`,
      'auditor',
    );
    expect(r.status).toBe(200);
    expect(r.headers.get('content-encoding')).toBe('gzip');
    expect(r.headers.get('x-nox-served-by')).toBe('replica');
    // fetch undoes the Content-Encoding: the lines arrive as the server wrote them.
    const lines = createInterface({
      input: Readable.fromWeb(r.body as never),
      crlfDelay: Number.POSITIVE_INFINITY,
    });
    let n = 0;
    let first: { id?: string; decision?: string } | undefined;
    for await (const line of lines) {
      if (!line) continue;
      if (n === 0) first = JSON.parse(line) as typeof first;
      n++;
    }
    const peak = peakRssMiB(admin);
    testLog('admin export', {
      rows: n,
      ms: Math.round(performance.now() - t0),
      rssBeforeMiB: before,
      peakRssMiB: peak,
    });
    expect(n).toBe(ROWS);
    expect(first?.decision).toBe('deny'); // g = 0, the oldest
    expect(peak).toBeLessThan(150);
  }, 300_000);

  it('exports CSV with formulas neutralized and JSON as one array', async () => {
    const at = new Date(T0 + 86_400_000 - 1000).toISOString();
    await pgQuery(
      pair.primary,
      `INSERT INTO audit_decisions (id, occurred_at, sidecar, path, decision, code, reason)
       VALUES (gen_random_uuid(), $1, 'csv', '=HYPERLINK("http://evil")', 'deny', 'NO_POLICY', 'a, "quoted" reason')`,
      [at],
    );
    await pair.waitForReplay();
    const range = `from=${at}&to=${new Date(T0 + 86_400_000).toISOString()}`;
    const csv = await (await api(`/v1/audit/export?format=csv&${range}`, 'auditor')).text();
    const [header, row] = csv.trim().split('\n');
    expect(header!.split(',').slice(0, 3)).toEqual(['id', 'occurred_at', 'sidecar']);
    expect(row).toContain(`"'=HYPERLINK(""http://evil"")"`);
    expect(row).toContain('"a, ""quoted"" reason"');
    const json = (await (await api(`/v1/audit/export?format=json&${range}`, 'auditor')).json()) as unknown[];
    expect(json).toHaveLength(1);
  });

  it('creates, lists and deletes quota overrides, each change an admin action in the audit log', async () => {
    const body = {
      subject: ['User=corp:alice'],
      policy: 'default/api-quota',
      limits: [{ name: 'hourly', requests: 50, window: '1h' }],
      reason: 'launch week',
    };
    const bad = await api('/v1/overrides', 'quota-admin', {
      method: 'PUT',
      body: JSON.stringify({ ...body, limits: [{ name: 'hourly', requests: 0, window: '1h' }] }),
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toContain('requests must be an integer');

    // A sidecar on the same database: the override is in force there within a second.
    const sidecar = await startSidecar({
      policyPath: policyDir('admin-overrides', openPolicy),
      env: { NOX_DATABASE_URL: pair.primary.connectionString, NOX_AUDIT: 'Off' },
    });
    const inForce = async () => {
      const text = await (await fetch(`http://127.0.0.1:${sidecar.httpPort}/metrics`)).text();
      return Number(/^nox_quota_overrides_in_force(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? -1);
    };
    await waitUntil('the sidecar has read the overrides', async () => (await inForce()) === 0, 20_000);
    const t0 = performance.now();
    const made = await api('/v1/overrides', 'quota-admin', { method: 'PUT', body: JSON.stringify(body) });
    expect(made.status).toBe(200);
    await waitUntil('the override in force on the sidecar', async () => (await inForce()) === 1, 5000);
    const appliedMs = Math.round(performance.now() - t0);
    const o = (await made.json()) as { id: string; subjectHash: string; createdBy: string };
    expect(o.subjectHash).toBe(subjectHash(['User=corp:alice']));
    expect(o.createdBy).toBe(`system:serviceaccount:${NS}:quota-admin`);
    const list = (await (await api('/v1/overrides', 'quota-admin')).json()) as { items: { id: string }[] };
    expect(list.items.map((i) => i.id)).toContain(o.id);

    const t1 = performance.now();
    expect((await api(`/v1/overrides/${o.id}`, 'quota-admin', { method: 'DELETE' })).status).toBe(204);
    await waitUntil('the override gone from the sidecar', async () => (await inForce()) === 0, 5000);
    const removedMs = Math.round(performance.now() - t1);
    await sidecar.stop();
    testLog('override on a sidecar', { appliedMs, removedMs });
    // The sidecar polls only every 5 s: within a second means the notification did it.
    expect(appliedMs).toBeLessThan(1000);
    expect(removedMs).toBeLessThan(1000);
    expect((await api(`/v1/overrides/${o.id}`, 'quota-admin', { method: 'DELETE' })).status).toBe(404);
    const actions = await pgQuery<{ actor: string; action: string; before: unknown; after: unknown }>(
      pair.primary,
      'SELECT actor, action, before, after FROM audit_admin_actions ORDER BY occurred_at, action',
    );
    expect(actions.map((a) => a.action)).toEqual(['override.create', 'override.delete']);
    expect(actions[0]).toMatchObject({ actor: `system:serviceaccount:${NS}:quota-admin`, before: null });
    expect(actions[1]!.after).toBeNull();
  });

  it('serves a read-only page: audit search with filters and a subject’s decisions over time, in headless Chromium', async () => {
    const from = new Date(T0 + 3_600_000).toISOString();
    const to = new Date(T0 + 2 * 3_600_000).toISOString();
    // What callers send is shown as text: a path made to be markup stays text.
    const hostile = '/v1/<img src=x onerror="document.title=1">';
    await pgQuery(
      pair.primary,
      `INSERT INTO audit_decisions (id, occurred_at, sidecar, host, method, path, subject, decision, code, latency_us)
       VALUES (gen_random_uuid(), $1, 'sidecar-0', 'api.example.com', 'GET', $2, 'corp:user-7', 'allow', 'ok', 100)`,
      [new Date(T0 + 90 * 60_000), hostile],
    );
    await pair.waitForReplay();
    const query = { subject: 'corp:user-7', decision: 'allow', from, to };
    const expected = (await (
      await api(`/v1/audit/decisions?${new URLSearchParams({ ...query, limit: '100' })}`, 'auditor')
    ).json()) as {
      items: { id: string }[];
    };
    expect(expected.items.length).toBeGreaterThan(30);

    const browser = await startChromium();
    try {
      const page = await browser.newPage();
      const pageErrors: string[] = [];
      page.on('pageerror', (e) => pageErrors.push(e.message));
      await page.goto(`${base}/ui?${new URLSearchParams(query)}`);
      // A token RBAC gives no audit verb: the page says the API refused, and shows nothing.
      await page.fill('#token', tokens.nobody!);
      await page.click('#token-form button');
      await page.waitForSelector('#error:not([hidden])');
      expect(await page.textContent('#error')).toContain('403');
      expect(await page.locator('#decisions tbody tr').count()).toBe(0);

      await page.fill('#token', tokens.auditor!);
      await page.click('#token-form button');
      // (The page's CSP forbids the evaluated scripts waitForFunction would inject: locators.)
      await page
        .locator('#decisions tbody tr')
        .nth(expected.items.length - 1)
        .waitFor();
      expect(await page.locator('#decisions tbody tr').count()).toBe(expected.items.length);
      const rows = await page.$$eval('#decisions tbody tr', (trs) =>
        trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
      );
      expect(rows.every((r) => r[1] === 'allow' && r[4] === 'corp:user-7')).toBe(true);
      expect(rows.some((r) => r[3] === `GET api.example.com${hostile}`)).toBe(true);
      expect(await page.locator('#decisions img').count()).toBe(0);
      expect(await page.textContent('#served-by')).toContain('replica');
      // The chart: one bar pair per minute with decisions, as many decisions as the table.
      await page.waitForSelector('#usage:not([hidden]) svg rect');
      const charted = await page.$$eval('#chart rect.allow title', (ts) =>
        ts.reduce((n, t) => n + Number(/: (\d+) allowed/.exec(t.textContent ?? '')?.[1] ?? 0), 0),
      );
      expect(charted).toBe(expected.items.length);
      const shot = await screenshot(page, 'admin-page-audit');
      testLog('admin page screenshot', shot);
      expect(pageErrors).toEqual([]);
      expect(await page.title()).toBe('Nox · audit');
      // The page's own answer: a CSP that runs this origin's script only, and no token in its URL.
      const res = await fetch(`${base}/ui`);
      expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
      expect(page.url()).not.toContain(tokens.auditor!.slice(0, 20));
    } finally {
      await browser.close();
    }
  });

  it('kubectl nox audit search and override answer from this API', async () => {
    const env = { ...process.env, NOX_ADMIN_URL: base };
    const run = (who: string, ...args: string[]) =>
      promisify(execFile)(
        process.execPath,
        [join(repoRoot, 'images', 'nox', 'bin', 'kubectl-nox.mjs'), ...args],
        {
          env: { ...env, NOX_ADMIN_TOKEN: tokens[who]! },
        },
      );
    const [from, to] = [new Date(T0).toISOString(), new Date(T0 + 86_400_000).toISOString()];
    const { stdout } = await run(
      'auditor',
      'audit',
      'search',
      '--from',
      from,
      '--to',
      to,
      '--subject',
      'corp:user-30',
      '--decision',
      'deny',
      '--limit',
      '5',
      '-o',
      'json',
    );
    const found = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { subject: string; decision: string; code: string });
    expect(found).toHaveLength(5);
    expect(
      found.every((d) => d.subject === 'corp:user-30' && d.decision === 'deny' && d.code === 'ACCESS_DENIED'),
    ).toBe(true);
    const text = await run(
      'auditor',
      'audit',
      'search',
      '--from',
      from,
      '--to',
      to,
      '--subject',
      'corp:user-30',
      '--limit',
      '2',
    );
    expect(text.stdout).toMatch(
      / (allow|deny) +\S+ +GET api\.example\.com\/v1\/items\/\d+ {2}corp:user-30 default\/api#/,
    );
    const created = await run(
      'quota-admin',
      'override',
      'create',
      '--policy',
      'default/api',
      '--subject',
      'User=corp:user-30',
      '--tier',
      'pro',
      '--expires',
      '1d',
      '-o',
      'json',
    );
    const o = JSON.parse(created.stdout) as { id: string; tier: string };
    expect(o.tier).toBe('pro');
    expect((await run('quota-admin', 'override', 'list', '--policy', 'default/api')).stdout).toContain(o.id);
    expect((await run('quota-admin', 'override', 'delete', o.id)).stdout).toBe(`override ${o.id} deleted\n`);
    await expect(run('auditor', 'override', 'list')).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringContaining('403'),
    });
  });

  it('ends an export whose connection dies half-way with an error, never a response left hanging', async () => {
    const range = new URLSearchParams({
      from: new Date(T0).toISOString(),
      to: new Date(T0 + 86_400_000).toISOString(),
      format: 'ndjson',
    });
    const res = await api(`/v1/audit/export?${range}`, 'auditor');
    expect(res.status).toBe(200);
    expect(res.headers.get('x-nox-served-by')).toBe('replica');
    const reader = res.body!.getReader();
    expect((await reader.read()).done).toBe(false);
    // The replica goes while the export is far from done (the client reads nothing meanwhile).
    await pair.replica.kill();
    try {
      const rest = (async () => {
        for (;;) if ((await reader.read()).done) return 'the whole export';
      })();
      await expect(rest).rejects.toThrow();
    } finally {
      await pair.replica.restart();
    }
  });

  it('reads from the primary when no replica answers', async () => {
    await pair.replica.kill();
    try {
      const r = await api('/v1/audit/decisions?limit=1', 'auditor');
      expect(r.status).toBe(200);
      expect(((await r.json()) as { servedBy: string }).servedBy).toBe('primary');
    } finally {
      await pair.replica.restart();
    }
  });
});

function rssMiB(s: Service): number {
  return statusField(s, 'VmRSS');
}
function peakRssMiB(s: Service): number {
  return statusField(s, 'VmHWM');
}
function statusField(s: Service, field: string): number {
  const status = readFileSync(`/proc/${s.child.pid}/status`, 'utf8');
  return Math.round(Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) / 1024);
}
