import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { repoRoot } from '../harness/tools.js';
import { startUpstream, type Upstream } from '../harness/upstream.js';

// Real Envoy with the ext_authz HTTP filter in front of a small upstream, and the built
// sidecar as the authorization service: what a client and the upstream actually see.
describe('through real Envoy', () => {
  let upstream: Upstream;
  let sidecar: Sidecar;
  let envoy: Envoy;

  beforeAll(async () => {
    upstream = await startUpstream();
    sidecar = await startSidecar({ policyPath: join(repoRoot, 'examples', 'demo') });
    envoy = await startEnvoy({ authzPort: sidecar.grpcPort, upstreamPort: upstream.port });
  });
  afterAll(async () => {
    await envoy?.stop();
    await sidecar?.stop();
    await upstream?.close();
  });

  it('lets an allowed request reach the upstream with the headers the sidecar added', async () => {
    const res = await fetch(`${envoy.url}/hello?x=1`, { headers: { 'x-nox-snapshot': 'forged' } });
    expect(res.status).toBe(200);
    const seen = upstream.seen.at(-1)!;
    expect(seen.url).toBe('/hello?x=1');
    expect(seen.headers['x-nox-decision-id']).toMatch(/^[0-9a-f-]{36}$/);
    // The client's own copy of a Nox header is replaced, never passed through.
    expect(seen.headers['x-nox-snapshot']).toBe('1');
  });

  it("answers a denied request with the sidecar's status and body, and the upstream never sees it", async () => {
    const before = upstream.seen.length;
    const res = await fetch(`${envoy.url}/admin/users`);
    expect(res.status).toBe(403);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(res.headers.get('x-nox-error')).toBe('ACCESS_DENIED');
    const body = (await res.json()) as { error: string; reason: string; decisionId: string };
    expect(body.error).toBe('ACCESS_DENIED');
    expect(body.reason).toContain('demo-access rule no-admin');
    expect(body.decisionId).toBe(res.headers.get('x-nox-decision-id'));
    expect(upstream.seen.length).toBe(before);
  });

  it('judges the path Envoy normalized: dot segments and encoded letters do not bypass a deny', async () => {
    const before = upstream.seen.length;
    for (const path of ['/public/../admin', '//admin', '/%61dmin', '/admin/']) {
      const res = await fetch(`${envoy.url}${path}`);
      expect(res.status, path).toBe(403);
    }
    expect(upstream.seen.length).toBe(before);
  });

  it('answers 429 with Retry-After and RateLimit headers once the quota is used, without reaching the upstream', async () => {
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 6; i++) {
      last = await fetch(`${envoy.url}/api/items`);
      statuses.push(last.status);
      if (i === 0) {
        expect(last.headers.get('ratelimit-policy')).toBe('"per-minute";q=5;w=60');
        expect(last.headers.get('ratelimit')).toMatch(/^"per-minute";r=4;t=\d+$/);
        expect(upstream.seen.at(-1)!.headers['x-nox-quota-remaining']).toBe('4');
      }
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
    expect(Number(last!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(last!.headers.get('ratelimit')).toMatch(/^"per-minute";r=0;t=\d+$/);
    expect(((await last!.json()) as { error: string }).error).toBe('QUOTA_EXCEEDED');
  });

  it('denies when the sidecar is down (failure_mode_allow=false) and allows again after it restarts', async () => {
    await sidecar.stop();
    const before = upstream.seen.length;
    const down = await fetch(`${envoy.url}/hello`);
    expect(down.status).toBe(503);
    expect(upstream.seen.length).toBe(before);

    sidecar = await sidecar.restart();
    // Envoy reconnects on its own; the first request after the restart must already pass.
    const up = await fetch(`${envoy.url}/hello`);
    expect(up.status).toBe(200);
    expect(upstream.seen.length).toBe(before + 1);
  });
});
