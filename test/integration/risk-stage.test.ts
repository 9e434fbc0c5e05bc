import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SignJWT } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KID, serveJwks } from '../../bench/lib/tokens.js';
import { migrate } from '../../common/db/migrate.js';
import { createLogger } from '../../common/logger.js';
import type { ICheckRequest, ICheckResponse } from '../../proto/envoy.js';
import { SidecarClient } from '../harness/grpcClient.js';
import { policyDir } from '../harness/policies.js';
import { pgQuery, startPostgres } from '../harness/postgres.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { scrapedMetric } from '../harness/registry.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { repoRoot } from '../harness/tools.js';
import {
  ORDINARY_FEATURES,
  ordinaryRows,
  type TrainedModel,
  trainerPython,
  trainModel,
} from '../harness/trainer.js';

/**
 * The risk stage in the built sidecar (standalone: the memory store observes the subjects),
 * scoring with models made by the real trainer: what Envoy is told at each threshold, DryRun,
 * failureMode, and model changes (a good one swapped in, a bad one refused while the previous
 * keeps scoring).
 */
const FEATURES = [...ORDINARY_FEATURES];

const policy = (
  model: { path: string; sha256: string },
  opts: { mode?: string; failureMode?: string; thresholds?: string; features?: readonly string[] } = {},
) => `
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: open, namespace: t }
spec:
  defaultAction: Allow
  rules: [{ name: no-secrets, action: Deny, when: { paths: [{ value: /api/secret }] } }]
---
apiVersion: nox.dev/v1alpha1
kind: RiskModel
metadata: { name: api-risk, namespace: t }
spec:
  match: { paths: [{ type: Prefix, value: /api }] }
  mode: ${opts.mode ?? 'Enforce'}
  failureMode: ${opts.failureMode ?? 'Closed'}
  model: { path: ${model.path}, sha256: "${model.sha256}" }
  features: [${(opts.features ?? FEATURES).join(', ')}]
  thresholds: ${opts.thresholds ?? '{ challenge: 0.6, deny: 0.7, block: 0.99 }'}
  blockDuration: 10m
  batch: { maxSize: 16, maxDelay: 1ms }
`;

function check(path: string, sourceIp: string): ICheckRequest {
  return {
    attributes: {
      source: { address: { socketAddress: { address: sourceIp, portValue: 5555 } } },
      request: {
        http: { method: 'GET', host: 'app.local', path, scheme: 'http', protocol: 'HTTP/1.1', headers: {} },
      },
    },
  };
}

const statusOf = (r: ICheckResponse) => (r.okResponse ? 200 : Number(r.deniedResponse?.status?.code ?? 0));
const header = (r: ICheckResponse, name: string) =>
  r.deniedResponse?.headers?.find((h) => h.header?.key === name)?.header?.value ?? undefined;

describe('the risk stage', () => {
  let a: TrainedModel;
  let b: TrainedModel;
  const sidecars: Sidecar[] = [];
  const clients: SidecarClient[] = [];

  beforeAll(async () => {
    [a, b] = await Promise.all([
      trainModel({ features: FEATURES, rows: ordinaryRows(3000, 1), contamination: 0.01 }),
      trainModel({ features: FEATURES, rows: ordinaryRows(3000, 2), contamination: 0.01 }),
    ]);
  }, 120_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    for (const s of sidecars) await s.stop().catch(() => {});
    await redis?.stop();
    for (const stop of stops.reverse()) await stop();
  });
  const stops: (() => Promise<void>)[] = [];
  let redis: RedisServer | undefined;

  const start = async (yaml: string, env: NodeJS.ProcessEnv = { NOX_QUOTA_STORE: 'memory' }) => {
    const dir = policyDir('risk', yaml);
    const s = await startSidecar({ policyPath: dir, env });
    sidecars.push(s);
    const c = new SidecarClient(s.grpcPort);
    clients.push(c);
    // The model loads after the snapshot: wait for it rather than for a fixed time.
    await waitUntil(
      'the risk model loaded',
      async () => (await scrapedMetric(s.httpPort, 'nox_risk_model_loads_total', { result: 'loaded' })) >= 1,
      30_000,
    );
    return { s, c, dir };
  };

  /** `n` requests to /api/items from `ip`, one after the other: their HTTP statuses. */
  const burst = async (c: SidecarClient, ip: string, n: number) => {
    const out: ICheckResponse[] = [];
    for (let i = 0; i < n; i++) out.push(await c.check(check('/api/items', ip), 5000));
    return out;
  };

  it('allows ordinary use; a subject far faster than anything trained on is refused, as the thresholds say', async () => {
    const { s, c } = await start(policy(a));
    const answers = await burst(c, '10.0.0.1', 150);
    const statuses = answers.map(statusOf);
    // The first requests look like the training traffic.
    expect(statuses.slice(0, 10).every((x) => x === 200)).toBe(true);
    // Past its rate, the subject is refused, and stays refused while the rate lasts.
    const firstRefused = statuses.findIndex((x) => x !== 200);
    expect(firstRefused).toBeGreaterThan(10);
    expect(statuses.slice(firstRefused + 10).every((x) => x === 401 || x === 403)).toBe(true);
    // A challenge is a step-up (RFC 9470); a deny says the score.
    for (const r of answers) {
      if (statusOf(r) === 401)
        expect(header(r, 'www-authenticate')).toContain('error="insufficient_user_authentication"');
    }
    // Every check was scored once, and each answer is what its action asks for.
    const count = (action: string) => scrapedMetric(s.httpPort, 'nox_risk_decisions_total', { action });
    expect(await scrapedMetric(s.httpPort, 'nox_risk_decisions_total')).toBe(150);
    expect(await count('allow')).toBe(statuses.filter((x) => x === 200).length);
    expect(await count('challenge')).toBe(statuses.filter((x) => x === 401).length);
    expect((await count('deny')) + (await count('block'))).toBe(statuses.filter((x) => x === 403).length);
    // Another address is another subject, with its own history.
    expect(statusOf((await burst(c, '10.0.0.2', 1))[0]!)).toBe(200);
  });

  it('a blocked subject is refused by a second sidecar within a second, on every route; others are not', async () => {
    redis = await startRedis();
    const env = { NOX_QUOTA_STORE: 'redis', NOX_REDIS_NODES: `127.0.0.1:${redis.port}` };
    const yaml = policy(a, { thresholds: '{ challenge: 0.5, deny: 0.55, block: 0.6 }' });
    const one = await start(yaml, env);
    const two = await start(yaml, env);
    // Burst on the first sidecar until its score reaches the block threshold.
    let blocked = false;
    for (let i = 0; i < 300 && !blocked; i++) {
      await one.c.check(check('/api/items', '10.0.5.1'), 5000);
      blocked = (await scrapedMetric(one.s.httpPort, 'nox_risk_decisions_total', { action: 'block' })) > 0;
    }
    expect(blocked).toBe(true);
    const at = Date.now();
    await waitUntil(
      'the second sidecar refusing the blocked subject',
      async () => statusOf(await two.c.check(check('/elsewhere', '10.0.5.1'), 5000)) === 403,
      1000,
      { intervalMs: 20 },
    );
    expect(Date.now() - at).toBeLessThan(1000);
    expect(await scrapedMetric(two.s.httpPort, 'nox_risk_blocked_checks_total')).toBeGreaterThanOrEqual(1);
    // Refused before quota and scoring: the second sidecar scored nothing for it.
    expect(await scrapedMetric(two.s.httpPort, 'nox_risk_decisions_total')).toBe(0);
    // Another subject is not blocked (on a route no RiskModel scores, so only the block could refuse it).
    expect(statusOf(await two.c.check(check('/elsewhere', '10.0.5.2'), 5000))).toBe(200);
  });

  it("records score, action and features in the audit log, a subject's refusals among them, and the trainer learns from them", async () => {
    const pgNode = await startPostgres();
    stops.push(() => pgNode.stop());
    const pool = new pg.Pool({ connectionString: pgNode.connectionString, max: 1 });
    await migrate(pool, createLogger('risk-test', { level: 'silent' }));
    await pool.end();
    const features = [...FEATURES, 'recentFailures15m'];
    const withFailures = await trainModel({
      features,
      rows: ordinaryRows(3000, 3).map((r, i) => [...r, i % 50 === 0 ? 1 : 0]),
    });
    const { c } = await start(
      policy(withFailures, { features, thresholds: '{ challenge: 0.99, deny: 0.995, block: 0.999 }' }),
      {
        NOX_QUOTA_STORE: 'memory',
        NOX_DATABASE_URL: pgNode.connectionString,
        NOX_AUDIT: 'BestEffort',
        NOX_AUDIT_FLUSH_MS: '50',
        POD_NAME: 'risk-audit',
      },
    );
    for (let i = 0; i < 3; i++)
      expect(statusOf(await c.check(check('/api/secret', '10.0.6.1'), 5000))).toBe(403);
    // The refusals reach the subject's state a moment later: the signal is a scored request
    // whose recorded features hold them.
    await waitUntil(
      'a scored request that saw the three refusals',
      async () => {
        await c.check(check('/api/items', '10.0.6.1'), 5000);
        const rows = await pgQuery<{ f: number }>(
          pgNode,
          "SELECT (risk_features->>'recentFailures15m')::int AS f FROM audit_decisions WHERE sidecar = 'risk-audit' AND risk_model IS NOT NULL ORDER BY occurred_at DESC LIMIT 1",
        );
        return rows[0]?.f === 3;
      },
      20_000,
      { intervalMs: 100 },
    );
    const [row] = await pgQuery<{
      risk_model: string;
      risk_action: string;
      risk_score: number;
      keys: string[];
    }>(
      pgNode,
      "SELECT risk_model, risk_action, risk_score, ARRAY(SELECT jsonb_object_keys(risk_features)) AS keys FROM audit_decisions WHERE sidecar = 'risk-audit' AND risk_model IS NOT NULL LIMIT 1",
    );
    expect(row).toMatchObject({ risk_model: 't/api-risk', risk_action: 'allow' });
    expect(row!.risk_score).toBeGreaterThanOrEqual(0);
    expect([...row!.keys].sort()).toEqual([...features].sort());

    // The trainer reads those vectors back (a replica in a cluster; this PostgreSQL here).
    // Two windows of traffic a second apart: the trainer fits on the first, evaluates on the
    // last (its held-out window is the last 0.5 s). The gap is in the data's timestamps, not a
    // wait for something to happen.
    for (let i = 0; i < 40; i++) await c.check(check('/api/items', `10.0.7.${i}`), 5000);
    const gap = Date.now() + 1000;
    await waitUntil('a second later', () => Date.now() >= gap, 5000, { intervalMs: 50 });
    for (let i = 0; i < 10; i++) await c.check(check('/api/items', `10.0.8.${i}`), 5000);
    await waitUntil(
      'the audit rows written',
      async () =>
        (
          await pgQuery<{ n: number }>(
            pgNode,
            "SELECT count(*)::int AS n FROM audit_decisions WHERE risk_model = 't/api-risk' AND source_ip << '10.0.8.0/24'",
          )
        )[0]!.n === 10,
      20_000,
    );
    const out = join(scratchDir('trainer-db'), 'model.onnx');
    const { stdout } = await promisify(execFile)(
      trainerPython(),
      [
        '-m',
        'nox_trainer.train',
        '--database-url',
        pgNode.connectionString,
        '--risk-model',
        't/api-risk',
        '--features',
        features.join(','),
        '--lookback-hours',
        '1',
        '--holdout-hours',
        String(0.5 / 3600),
        '--min-events',
        '10',
        '--out',
        out,
      ],
      { cwd: join(repoRoot, 'trainer') },
    );
    const report = JSON.parse(stdout) as { result: string; train: number; holdout: number; sha256: string };
    expect(report.result).toBe('Trained');
    expect(report.holdout).toBe(10);
    expect(report.train).toBeGreaterThanOrEqual(40);
    expect(createHash('sha256').update(readFileSync(out)).digest('hex')).toBe(report.sha256);
  });

  it('a challenge is passed by a token showing a fresh authentication of the asked acr (RFC 9470), and says what it asks for', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const issuer = await serveJwks(publicKey);
    stops.push(() => issuer.close());
    const provider = `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: idp, namespace: t }
spec:
  type: oidc
  issuer: "${issuer.issuer}"
  clientId: gw
  audiences: [api]
  allowedAlgorithms: [RS256]
  endpoints: { jwks: "${issuer.jwksUri}" }
`;
    // Every scored request is at the challenge threshold (0), none at deny.
    const yaml = policy(a, { thresholds: '{ challenge: 0, deny: 0.999, block: 0.9999 }' })
      .replace('spec:\n  defaultAction: Allow', 'spec:\n  providers: [idp]\n  defaultAction: Allow')
      .replace(
        '  blockDuration: 10m',
        '  blockDuration: 10m\n  stepUp: { maxAge: 5m, acrValues: [urn:mfa, phr] }',
      );
    const { s, c } = await start(`${provider}---\n${yaml}`);
    const now = Math.floor(Date.now() / 1000);
    const token = (claims: Record<string, unknown>) =>
      new SignJWT({ sub: 'carol', ...claims })
        .setProtectedHeader({ alg: 'RS256', kid: KID })
        .setIssuer(issuer.issuer)
        .setAudience('api')
        .setIssuedAt(now)
        .setExpirationTime(now + 600)
        .sign(privateKey);
    const withToken = async (t: string) => {
      const req = check('/api/items', '10.0.9.1');
      req.attributes!.request!.http!.headers = { authorization: `Bearer ${t}` };
      return c.check(req, 5000);
    };
    const stale = await withToken(await token({ auth_time: now - 3600, acr: 'urn:mfa' }));
    expect(statusOf(stale)).toBe(401);
    expect(header(stale, 'www-authenticate')).toBe(
      'Bearer error="insufficient_user_authentication", error_description="A fresh authentication is required", max_age=300, acr_values="urn:mfa phr"',
    );
    // Fresh, but not the asked context; then fresh and of it.
    expect(statusOf(await withToken(await token({ auth_time: now - 10, acr: 'pwd' })))).toBe(401);
    expect(statusOf(await withToken(await token({ auth_time: now - 10 })))).toBe(401);
    expect(statusOf(await withToken(await token({ auth_time: now - 10, acr: 'phr' })))).toBe(200);
    expect(await scrapedMetric(s.httpPort, 'nox_risk_step_ups_total')).toBe(1);
  });

  it('DryRun allows the same burst and counts what it would have decided', async () => {
    const { s, c } = await start(policy(a, { mode: 'DryRun' }));
    const statuses = (await burst(c, '10.0.1.1', 150)).map(statusOf);
    expect(statuses.every((x) => x === 200)).toBe(true);
    const all = await scrapedMetric(s.httpPort, 'nox_risk_decisions_total', { mode: 'DryRun' });
    const allowed = await scrapedMetric(s.httpPort, 'nox_risk_decisions_total', {
      action: 'allow',
      mode: 'DryRun',
    });
    expect(all).toBe(150);
    expect(allowed).toBeLessThan(150); // the would-be challenges and denies
  });

  it('a model that cannot be loaded: failureMode Closed refuses (503), Open allows', async () => {
    const missing = { path: '/nonexistent/model.onnx', sha256: a.sha256 };
    for (const [failureMode, status] of [
      ['Closed', 503],
      ['Open', 200],
    ] as const) {
      const dir = policyDir('risk-missing', policy(missing, { failureMode }));
      const s = await startSidecar({ policyPath: dir, env: { NOX_QUOTA_STORE: 'memory' } });
      sidecars.push(s);
      const c = new SidecarClient(s.grpcPort);
      clients.push(c);
      await waitUntil(
        'the refused load',
        async () =>
          (await scrapedMetric(s.httpPort, 'nox_risk_model_loads_total', { result: 'ModelMissing' })) >= 1,
        30_000,
      );
      expect(statusOf((await burst(c, '10.0.2.1', 1))[0]!)).toBe(status);
      expect(await scrapedMetric(s.httpPort, 'nox_risk_failures_total', { reason: 'model_not_loaded' })).toBe(
        1,
      );
    }
  });

  it('models swapped back and forth under load: every check answered and scored, none failed', async () => {
    const quiet = '{ challenge: 0.999, deny: 0.9995, block: 0.9999 }';
    const { s, c, dir } = await start(policy(a, { thresholds: quiet }));
    let running = true;
    let answered = 0;
    const statuses = new Map<number, number>();
    const worker = async (w: number) => {
      for (let i = 0; running; i++) {
        const r = await c.check(check('/api/items', `10.1.${w}.${i % 200}`), 5000);
        answered++;
        statuses.set(statusOf(r), (statuses.get(statusOf(r)) ?? 0) + 1);
      }
    };
    const load = Promise.all(Array.from({ length: 16 }, (_, w) => worker(w)));
    try {
      for (let swap = 1; swap <= 6; swap++) {
        writeFileSync(join(dir, 'p.yaml'), policy(swap % 2 ? b : a, { thresholds: quiet }));
        await waitUntil(
          `swap ${swap} in force`,
          async () =>
            (await scrapedMetric(s.httpPort, 'nox_risk_model_loads_total', { result: 'loaded' })) >= swap + 1,
          30_000,
        );
      }
    } finally {
      running = false;
      await load;
    }
    expect([...statuses.keys()]).toEqual([200]);
    expect(await scrapedMetric(s.httpPort, 'nox_risk_decisions_total')).toBe(answered);
    expect(await scrapedMetric(s.httpPort, 'nox_risk_failures_total')).toBe(0);
    expect(answered).toBeGreaterThan(100);
  });

  it('a new model is swapped in; one whose digest does not match is refused and the previous keeps scoring', async () => {
    const { s, c, dir } = await start(policy(a));
    writeFileSync(join(dir, 'p.yaml'), policy(b));
    await waitUntil(
      'model b loaded',
      async () => (await scrapedMetric(s.httpPort, 'nox_risk_model_loads_total', { result: 'loaded' })) >= 2,
      30_000,
    );
    // A digest of other bytes. (Not b's digest with one character changed: the digest differs per
    // training, since the model holds its training time, and a change that happens to leave it
    // as it was would name the running model, which is rightly not loaded again.)
    const other = createHash('sha256').update('not the bytes of model a').digest('hex');
    writeFileSync(join(dir, 'p.yaml'), policy({ path: a.path, sha256: other }));
    await waitUntil(
      'the mismatching digest refused',
      async () =>
        (await scrapedMetric(s.httpPort, 'nox_risk_model_loads_total', { result: 'DigestMismatch' })) >= 1,
      30_000,
    );
    const before = await scrapedMetric(s.httpPort, 'nox_risk_decisions_total');
    expect(statusOf((await burst(c, '10.0.3.1', 1))[0]!)).toBe(200);
    expect(await scrapedMetric(s.httpPort, 'nox_risk_decisions_total')).toBe(before + 1);
    expect(await scrapedMetric(s.httpPort, 'nox_risk_failures_total')).toBe(0);
  });
});
