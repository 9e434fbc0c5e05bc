import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Explanation } from '../../cli/explain/explainer.js';
import { type RequestSpec, toCheckRequest } from '../../cli/explain/request.js';
import { KubeClient } from '../../common/kube/client.js';
import { loadKubeConfig } from '../../common/kube/config.js';
import type { ICheckResponse } from '../../proto/envoy.js';
import { installCrds } from '../harness/crds.js';
import { SidecarClient } from '../harness/grpcClient.js';
import { type Kube, startKube } from '../harness/kube.js';
import { testLog } from '../harness/log.js';
import { scratchDir } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { repoRoot } from '../harness/tools.js';

/**
 * Issue 14: `kubectl nox explain` agrees with the sidecar's actual decision on a generated set
 * of requests over the examples' policies (examples/: the API's AccessPolicy and QuotaPolicy,
 * the demo's catch-all pair, the four OAuth2Providers; the corporate SSO's issuer is this
 * test's, so that tokens can be signed). Every request goes to a real sidecar over gRPC and,
 * as one JSON Lines file, through the plugin binary; the two must answer alike, request by
 * request: allowed or not, the code, the reason, the rule, the caller, the tier.
 */
const REQUESTS = 1200;
const kubectlNox = join(repoRoot, 'images', 'nox', 'bin', 'kubectl-nox.mjs');

/** A small seeded generator, so a failure names a request that can be made again. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('kubectl nox explain', () => {
  let jwks: Server;
  let issuer: string;
  let sign: (
    claims: Record<string, unknown>,
    opts?: { expired?: boolean; foreign?: boolean },
  ) => Promise<string>;
  let policies: string;
  let sidecar: Sidecar;
  let client: SidecarClient;

  beforeAll(async () => {
    const key = await generateKeyPair('ES256');
    const foreign = await generateKeyPair('ES256');
    const jwk: JWK = { ...(await exportJWK(key.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    jwks = createServer((_req, res) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })),
    );
    await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', () => r()));
    const port = (jwks.address() as { port: number }).port;
    issuer = `http://127.0.0.1:${port}/realms/corp`;
    sign = (claims, opts = {}) =>
      new SignJWT({ scope: 'api', client_id: 'nox-gateway', ...claims })
        .setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'at+jwt' })
        .setIssuer(issuer)
        .setAudience('https://api.example.com')
        .setIssuedAt()
        .setExpirationTime(opts.expired ? Math.floor(Date.now() / 1000) - 3600 : '1h')
        .sign(opts.foreign ? foreign.privateKey : key.privateKey);

    policies = scratchDir('explain-policies');
    const examples = join(repoRoot, 'examples');
    for (const f of ['accesspolicy.yaml', 'quotapolicy.yaml'])
      writeFileSync(join(policies, f), readFileSync(join(examples, f)));
    for (const f of ['access.yaml', 'quota.yaml'])
      writeFileSync(join(policies, `demo-${f}`), readFileSync(join(examples, 'demo', f)));
    const providers = readFileSync(join(examples, 'oauth2providers.yaml'), 'utf8');
    const sso = 'issuer: https://sso.example.com/realms/corp';
    expect(providers).toContain(sso);
    writeFileSync(
      join(policies, 'oauth2providers.yaml'),
      providers.replace(
        sso,
        `issuer: ${issuer}\n  endpoints: { jwks: "http://127.0.0.1:${port}/jwks" }\n  audiences: [https://api.example.com]`,
      ),
    );
    sidecar = await startSidecar({
      policyPath: policies,
      env: { NOX_CHECK_DEADLINE_MS: '5000' },
    });
    client = new SidecarClient(sidecar.grpcPort);
  });

  afterAll(async () => {
    client?.close();
    await sidecar?.stop();
    await new Promise((r) => jwks?.close(r));
  });

  /** The requests: hosts, paths (odd spellings included), methods, callers and addresses, mixed. */
  async function generate(n: number): Promise<RequestSpec[]> {
    const rnd = prng(14);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const hosts = [
      'api.example.com',
      'API.Example.com.',
      'api.example.com:443',
      'www.example.com',
      'localhost:8080',
    ];
    const paths = [
      '/api',
      '/api/items/7',
      '/api/items?page=2',
      '/api/internal/metrics',
      '/api/billing/invoices',
      '/api/reports/q3',
      '/API/Reports/q3',
      '/api/%72eports/x',
      '/api/../admin',
      '/api//items',
      '/admin',
      '/admin/users',
      '/%61dmin',
      '/',
      '/docs',
      '/api/a%2fb',
      'no-slash',
    ];
    const groups = [
      [],
      ['admins'],
      ['staff'],
      ['paying-customers'],
      ['staff', 'paying-customers'],
      ['contractors'],
    ];
    const out: RequestSpec[] = [];
    for (let i = 0; i < n; i++) {
      const headers: Record<string, string> = { accept: pick(['application/json', '*/*', 'text/html']) };
      const caller = rnd();
      let token: string | undefined;
      // Every signed-in caller is someone new: quota counters never decide (they are not read
      // by explain without --redis), so agreement is about the policies.
      const claims = {
        sub: `user-${i}`,
        realm_groups: pick(groups),
        ...(rnd() < 0.2 ? { tier: 'pro' } : {}),
      };
      if (caller < 0.45) token = await sign(claims);
      else if (caller < 0.5) token = await sign(claims, { expired: true });
      else if (caller < 0.55) token = await sign(claims, { foreign: true });
      else if (caller < 0.6) token = 'not-a-jwt';
      else if (caller < 0.63) headers.authorization = 'Basic dXNlcjpwYXNz';
      else if (caller < 0.66) headers['x-nox-user'] = 'admin'; // forged: never an identity
      out.push({
        id: `req-${i}`,
        method: pick(['GET', 'GET', 'HEAD', 'POST', 'DELETE', 'PUT']),
        host: pick(hosts),
        path: pick(paths),
        headers,
        ...(token ? { token } : {}),
        sourceIp: `10.${Math.floor(rnd() * 256)}.${Math.floor(rnd() * 256)}.${1 + Math.floor(rnd() * 254)}`,
      });
    }
    return out;
  }

  /** The sidecar's answer, in explain's terms. */
  function sidecarSays(r: ICheckResponse): {
    allowed: boolean;
    code: string;
    reason?: string;
    rule?: string;
    user?: string;
    tier?: string;
  } {
    const headers = Object.fromEntries(
      (r.okResponse?.headers ?? r.deniedResponse?.headers ?? []).map((h) => [
        h.header!.key!,
        h.header!.value!,
      ]),
    );
    if (r.okResponse) {
      return {
        allowed: true,
        code: 'ok',
        ...(headers['x-nox-access-rule'] ? { rule: headers['x-nox-access-rule'] } : {}),
        ...(headers['x-nox-user'] ? { user: headers['x-nox-user'] } : {}),
        ...(headers['x-nox-tier'] ? { tier: headers['x-nox-tier'] } : {}),
      };
    }
    // A browser's deny is a page that names no policy or reason (respond.ts): the code only.
    const raw = r.deniedResponse?.body ?? '';
    const body = (raw.startsWith('{') ? JSON.parse(raw) : {}) as { reason?: string };
    return { allowed: false, code: r.status?.message ?? '', ...(body.reason ? { reason: body.reason } : {}) };
  }

  function explainSays(e: Explanation): ReturnType<typeof sidecarSays> {
    if (e.decision.allowed) {
      // x-nox-tier: one tier per QuotaPolicy charged, in the order they were.
      const tiers = [...new Map(e.quota.map((q) => [q.policy, q.tier])).values()];
      return {
        allowed: true,
        code: 'ok',
        ...(e.rule ? { rule: e.rule } : {}),
        ...(e.identity ? { user: e.identity.subject } : {}),
        ...(tiers.length ? { tier: tiers.join(',') } : {}),
      };
    }
    return {
      allowed: false,
      code: e.decision.code,
      ...(e.decision.reason ? { reason: e.decision.reason } : {}),
    };
  }

  it(`agrees with the sidecar on ${REQUESTS} generated requests over the examples' policies`, async () => {
    const requests = await generate(REQUESTS);
    const file = join(scratchDir('explain-requests'), 'requests.jsonl');
    writeFileSync(file, `${requests.map((r) => JSON.stringify(r)).join('\n')}\n`);
    const actual = new Map<string, ReturnType<typeof sidecarSays>>();
    for (const r of requests) actual.set(r.id!, sidecarSays(await client.check(toCheckRequest(r), 5000)));

    const { stdout } = await promisify(execFile)(
      process.execPath,
      [kubectlNox, 'explain', '-f', policies, '--requests', file, '-o', 'json'],
      { maxBuffer: 64 << 20, timeout: 240_000 },
    );
    const explained = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Explanation);
    expect(explained.length).toBe(REQUESTS);

    const tally: Record<string, number> = {};
    const disagreements: unknown[] = [];
    for (const e of explained) {
      const said = explainSays(e);
      const sidecarSaid = actual.get(e.id);
      if (sidecarSaid && !sidecarSaid.allowed && sidecarSaid.reason === undefined) delete said.reason;
      tally[said.code] = (tally[said.code] ?? 0) + 1;
      if (JSON.stringify(said) !== JSON.stringify(sidecarSaid))
        disagreements.push({ id: e.id, explain: said, sidecar: sidecarSaid });
    }
    testLog('explain agreement: decisions by code', tally);
    expect(disagreements.slice(0, 5), `${disagreements.length} of ${REQUESTS} disagree`).toEqual([]);
    // The set is worth agreeing on: allows and the policy's own denies, each many times.
    for (const code of [
      'ok',
      'ACCESS_DENIED',
      'UNAUTHENTICATED',
      'MALFORMED_REQUEST',
      'CHALLENGE_REQUIRED',
    ]) {
      expect(tally[code] ?? 0, code).toBeGreaterThanOrEqual(10);
    }
  }, 300_000);

  it('prints, for one request, the policy, rule, identity method, the limits it would charge, and the decision', async () => {
    const token = await sign({ sub: 'carol', realm_groups: ['paying-customers'] });
    const { stdout } = await promisify(execFile)(process.execPath, [
      kubectlNox,
      'explain',
      '-f',
      policies,
      '--url',
      'https://api.example.com/api/reports/q3',
      '--token',
      token,
    ]);
    expect(stdout).toContain('decision:     ALLOW (200)');
    expect(stdout).toContain('AccessPolicy default/api-access, rule signed-in-users');
    expect(stdout).toContain('corporate-sso:carol by jwt');
    expect(stdout).toMatch(/QuotaPolicy default\/api-quotas tier pro limit burst: 10 per 1 s, costs 5/);
    expect(stdout).toMatch(/QuotaPolicy default\/demo-quota tier free limit per-minute: 5 per 60 s, costs 2/);
    expect(stdout).toContain('the quota counters were not read');
    // No token ever reaches the output.
    expect(stdout).not.toContain(token);
  });

  it('refuses a malformed invocation with a usage error (exit 2), naming what is wrong', async () => {
    const run = promisify(execFile)(process.execPath, [kubectlNox, 'explain', '-f', policies]);
    await expect(run).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining('give the request') });
    const bad = promisify(execFile)(process.execPath, [
      kubectlNox,
      'explain',
      '-f',
      policies,
      '--url',
      'api/x',
    ]);
    await expect(bad).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining('not an absolute URL'),
    });
    const header = promisify(execFile)(process.execPath, [
      kubectlNox,
      'explain',
      '-f',
      policies,
      '--host',
      'a',
      '-H',
      'no-colon',
    ]);
    await expect(header).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining('expected "Name: value"'),
    });
  });
});

describe('kubectl nox explain against a cluster', () => {
  let kube: Kube;
  let kc: KubeClient;
  const policies = '/apis/nox.dev/v1alpha1/namespaces/default/accesspolicies';

  beforeAll(async () => {
    kube = await startKube();
    await installCrds(kube.kubeConfig());
    kc = new KubeClient(await loadKubeConfig(kube.kubeconfigPath));
    await kc.request('POST', policies, {
      body: {
        apiVersion: 'nox.dev/v1alpha1',
        kind: 'AccessPolicy',
        metadata: { name: 'shop' },
        spec: {
          match: { hosts: ['shop.example.com'] },
          defaultAction: 'Allow',
          rules: [
            { name: 'no-admin', action: 'Deny', when: { paths: [{ type: 'Prefix', value: '/admin' }] } },
          ],
        },
      },
    });
  }, 180_000);

  afterAll(async () => {
    await kube?.stop();
  });

  const explain = async (url: string) =>
    JSON.parse(
      (
        await promisify(execFile)(process.execPath, [
          kubectlNox,
          'explain',
          '--kubeconfig',
          kube.kubeconfigPath,
          '--url',
          url,
          '-o',
          'json',
        ])
      ).stdout,
    ) as Explanation;

  it('reads the policies in force from the API server, each time', async () => {
    const denied = await explain('https://shop.example.com/admin/users');
    expect(denied).toMatchObject({
      decision: { allowed: false, code: 'ACCESS_DENIED', status: 403 },
      accessPolicy: 'default/shop',
      rule: 'no-admin',
      identity: null,
    });
    expect((await explain('https://shop.example.com/cart')).decision).toMatchObject({ allowed: true });
    // The rule goes: the next explain sees the change (no cache, no watch left behind).
    await kc.request('PATCH', `${policies}/shop`, {
      body: [{ op: 'remove', path: '/spec/rules' }],
      contentType: 'application/json-patch+json',
    });
    expect(await explain('https://shop.example.com/admin/users')).toMatchObject({
      decision: { allowed: true },
      rule: 'default',
    });
    expect((await explain('https://other.example.com/')).decision).toMatchObject({
      allowed: false,
      code: 'NO_POLICY',
    });
  });
});
