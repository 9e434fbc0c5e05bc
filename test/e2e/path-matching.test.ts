import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import {
  type PathUpstream,
  rawRequest,
  startGoUpstream,
  startLenientUpstream,
  startTomcatUpstream,
} from '../harness/pathUpstreams.js';
import { scratchDir } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';

/**
 * Which resource a real upstream serves for a path, against what Nox decided for it, through
 * real Envoy: Go's net/http, embedded Tomcat and an Express-style lenient Node server each
 * route tricky paths (path parameters, case, trailing slashes, dot segments hidden behind
 * parameters, HEAD) their own way. A request Nox allows must never be served by a resource the
 * policy denies, on any of them.
 */

const policies = [
  {
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'AccessPolicy',
    metadata: { name: 'site', namespace: 'web' },
    spec: {
      rules: [
        {
          name: 'reports-no-reads',
          action: 'Deny',
          when: { paths: [{ value: '/public/reports' }], methods: ['GET'] },
        },
        { name: 'no-admin', action: 'Deny', when: { paths: [{ value: '/admin' }] } },
        { name: 'public', action: 'Allow', when: { paths: [{ value: '/public' }] } },
        { name: 'api-reads', action: 'Allow', when: { paths: [{ value: '/api' }], methods: ['GET'] } },
        { name: 'health', action: 'Allow', when: { paths: [{ type: 'Exact', value: '/health' }] } },
      ],
      defaultAction: 'Deny',
    },
  },
  // Two policies on one host: which governs /ADMIN depends on the reading.
  {
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'AccessPolicy',
    metadata: { name: 'two-admin', namespace: 'web' },
    spec: { match: { hosts: ['two.test'], paths: [{ value: '/admin' }] }, defaultAction: 'Deny' },
  },
  {
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'AccessPolicy',
    metadata: { name: 'two-rest', namespace: 'web' },
    spec: { match: { hosts: ['two.test'] }, defaultAction: 'Allow' },
  },
];

/** What the `site` policy means for each resource the upstreams serve. */
function policyAllows(resource: string, method: string): boolean {
  const read = method === 'GET' || method === 'HEAD';
  switch (resource) {
    case 'public':
    case 'health':
      return true;
    case 'reports':
      return !read;
    case 'api':
      return read;
    default:
      return false; // admin, other
  }
}

describe('path matching agrees with real upstreams (through Envoy)', () => {
  let sidecar: Sidecar;
  const upstreams: PathUpstream[] = [];
  const envoys = new Map<PathUpstream['name'], Envoy>();

  beforeAll(async () => {
    const dir = scratchDir('path-policies');
    writeFileSync(
      join(dir, 'policies.json'),
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items: policies }),
    );
    // The question is what is decided, not how fast: a busy machine must not turn checks into 503s.
    sidecar = await startSidecar({ policyPath: dir, env: { NOX_CHECK_DEADLINE_MS: '2000' } });
    upstreams.push(
      ...(await Promise.all([startGoUpstream(), startTomcatUpstream(), startLenientUpstream()])),
    );
    for (const u of upstreams)
      envoys.set(
        u.name,
        await startEnvoy({ authzPort: sidecar.grpcPort, upstreamPort: u.port, authzTimeoutMs: 3000 }),
      );
  }, 180_000);

  afterAll(async () => {
    await Promise.all([...envoys.values()].map((e) => e.stop()));
    await Promise.all(upstreams.map((u) => u.stop()));
    await sidecar?.stop();
  });

  const via = (name: PathUpstream['name'], method: string, path: string, host?: string) =>
    rawRequest(envoys.get(name)!.port, method, path, host ? { host } : {});

  it('denies the known bypasses: path parameters, case, parameters hiding "..", HEAD for GET', async () => {
    const denied: [string, string][] = [
      ['GET', '/admin;x=1/users'],
      ['GET', '/admin;jsessionid=x'],
      ['GET', '/ADMIN/users'],
      ['GET', '/Admin'],
      ['GET', '/public/..;/admin'],
      ['GET', '/public/..;/..;/admin/users'],
      ['GET', '/public/%2e%2e;/admin'],
      ['GET', '/public/%2E%2E;jsessionid=1/admin/users'],
      ['GET', '/public/x/..;/..;/admin;x'],
      ['GET', '/public/REPORTS'],
      ['HEAD', '/public/reports/q3'],
      ['GET', '/admin/'],
      ['GET', '/health/'],
      ['POST', '/api/orders'],
      ['GET', '/x;/admin'],
    ];
    for (const [method, path] of denied) {
      for (const name of envoys.keys()) {
        const r = await via(name, method, path);
        expect(r.status, `${method} ${path} via ${name}: ${r.body}`).toBe(403);
        expect(r.headers['x-resource'], `${method} ${path} via ${name}`).toBeUndefined();
      }
    }
    // Envoy's normalization already reads "..;" as ".."; an encoded "%2e%2e;" it leaves to Nox:
    // allowed as sent (under /public), denied as Tomcat reads it. The reason says which reading.
    const r = await via('tomcat', 'GET', '/public/%2e%2e;/admin');
    expect(JSON.parse(r.body)).toMatchObject({ error: 'ACCESS_DENIED' });
    expect(JSON.parse(r.body).reason).toContain('rule no-admin (the path read as /admin');
  });

  it('still allows what the policy allows under every reading', async () => {
    const allowed: [string, string, string][] = [
      ['GET', '/public/docs', 'public'],
      ['GET', '/public/docs;jsessionid=abc', 'public'],
      ['HEAD', '/api/orders', 'api'],
      ['GET', '/api/orders/', 'api'],
      ['POST', '/public/reports/q3', 'reports'],
      ['GET', '/health', 'health'],
    ];
    for (const [method, path, resource] of allowed) {
      for (const name of envoys.keys()) {
        const r = await via(name, method, path);
        // Go redirects a request for a directory without its slash; every other answer is the resource.
        expect(r.status, `${method} ${path} via ${name}: ${r.body}`).toBe(200);
        expect(r.headers['x-resource'], `${method} ${path} via ${name}`).toBe(resource);
      }
    }
  });

  it('denies a path whose readings fall under different policies, and reads a trailing-dot host as the host', async () => {
    const ambiguous = await via('lenient', 'GET', '/ADMIN/x', 'two.test');
    expect(ambiguous.status).toBe(403);
    expect(JSON.parse(ambiguous.body)).toMatchObject({ error: 'PATH_AMBIGUOUS' });
    expect(JSON.parse(ambiguous.body).reason).toMatch(/two-rest.*two-admin/);
    expect((await via('lenient', 'GET', '/Admin;x', 'two.test')).status).toBe(403);
    expect((await via('lenient', 'GET', '/other', 'two.test.')).status).toBe(200);
    const dotted = await via('lenient', 'GET', '/admin', 'two.test.');
    expect(dotted.status).toBe(403);
    expect(JSON.parse(dotted.body).reason).toContain('two-admin');
  });

  it('never lets a generated path reach a resource the policy denies, on any upstream', async () => {
    const segment = fc.constantFrom(
      'admin',
      'ADMIN',
      'Admin',
      'aDmIn',
      'public',
      'PUBLIC',
      'Public',
      'reports',
      'Reports',
      'api',
      'API',
      'health',
      'HEALTH',
      'x',
      '.',
      '..',
      '..;',
      '.;',
      ';',
      ';x=1',
      'admin;x=1',
      'admin;',
      'public;jsessionid=1',
      'reports;a=b',
      '%61dmin',
      '%2e%2e',
      '%2e%2e;',
      '%2e',
      'admin%3bx',
      'admin.',
      '',
    );
    const request = fc.record({
      method: fc.constantFrom('GET', 'HEAD', 'POST', 'DELETE'),
      // Mostly under an allowed prefix, so that both answers are common.
      first: fc.oneof(
        { arbitrary: fc.constantFrom('public', 'api', 'health', 'Public', 'public;x', 'api;'), weight: 3 },
        { arbitrary: segment, weight: 1 },
      ),
      segments: fc.array(segment, { maxLength: 4 }),
      trailingSlash: fc.boolean(),
      query: fc.constantFrom('', '?a=1', '?/admin', '?;x'),
    });
    const tally = { allowed: 0, denied: 0 };
    const served = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(request, async ({ method, first, segments, trailingSlash, query }) => {
        const path = `/${[first, ...segments].join('/')}${trailingSlash ? '/' : ''}${query}`;
        for (const name of envoys.keys()) {
          const r = await via(name, method, path);
          const resource = r.headers['x-resource'];
          if (r.status === 403 && resource === undefined) tally.denied++;
          if (r.status >= 200 && r.status < 300 && resource !== undefined) {
            tally.allowed++;
            served.set(`${name}:${resource}`, (served.get(`${name}:${resource}`) ?? 0) + 1);
            if (!policyAllows(resource, method)) return false;
          }
          expect(r.status, `${method} ${path} via ${name}`).toBeLessThan(500);
        }
        return true;
      }),
      { numRuns: 250, seed: Number(process.env.NOX_FC_SEED ?? Date.now() % 2 ** 31) },
    );
    // Not vacuous: both answers occurred, and every upstream served allowed resources.
    expect(tally.allowed).toBeGreaterThan(50);
    expect(tally.denied).toBeGreaterThan(50);
    for (const name of envoys.keys())
      expect(
        [...served.keys()].some((k) => k.startsWith(`${name}:`)),
        name,
      ).toBe(true);
    // The sidecar is still healthy afterwards.
    expect((await fetch(`http://127.0.0.1:${sidecar.httpPort}/readyz`)).status).toBe(200);
    expect((await via('go', 'GET', '/public/after')).status).toBe(200);
  }, 240_000);
});
