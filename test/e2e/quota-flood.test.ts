import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ICheckRequest, ICheckResponse } from '../../proto/envoy.js';
import { SidecarClient } from '../harness/grpcClient.js';
import { scratchDir } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';

// An attacker floods one sidecar that counts in memory (standalone mode, `make demo`) with
// made-up quota subjects: a fresh source address, API key or header value per request. Made-up
// keys and header values get no bucket at all; real addresses do, and the store stays within
// NOX_QUOTA_MEMORY_MAX_ENTRIES, so the process's resident memory levels off.
const policies = `
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: open }
spec:
  rules:
    - { name: everyone, action: Allow }
---
apiVersion: nox.dev/v1alpha1
kind: QuotaPolicy
metadata: { name: per-address }
spec:
  match: { paths: [{ value: /ip }] }
  subject: [{ type: SourceIP }]
  tiers:
    - name: free
      # Eight long-lived states per address (a rolling day at 1000/day lasts 86 s after a
      # request; a calendar counter until the period ends): unbounded, every address would
      # keep about 1.5 KB for at least that long.
      limits:
        - { name: d1, requests: 1000, window: 1d }
        - { name: d2, requests: 1000, window: 2d }
        - { name: d3, requests: 1000, window: 3d }
        - { name: d4, requests: 1000, window: 4d }
        - { name: day, requests: 1000, calendar: Day }
        - { name: week, requests: 1000, calendar: Week }
        - { name: month, requests: 1000, calendar: Month }
        - { name: year, requests: 1000, calendar: Year }
---
apiVersion: nox.dev/v1alpha1
kind: QuotaPolicy
metadata: { name: per-key }
spec:
  match: { paths: [{ value: /key }] }
  subject: [{ type: ApiKey, name: x-api-key }]
  tiers: [{ name: free, limits: [{ requests: 100, window: 1h }] }]
---
apiVersion: nox.dev/v1alpha1
kind: QuotaPolicy
metadata: { name: per-tenant }
spec:
  match: { paths: [{ value: /tenant }] }
  subject: [{ type: Header, name: x-tenant }]
  tiers: [{ name: free, limits: [{ requests: 100, window: 1h }] }]
`;

const MAX_ENTRIES = 10_000;

function check(path: string, address: string, headers: Record<string, string> = {}): ICheckRequest {
  return {
    attributes: {
      source: { address: { socketAddress: { address, portValue: 40000 } } },
      request: {
        http: { method: 'GET', host: 'app.local', path, scheme: 'http', protocol: 'HTTP/1.1', headers },
      },
    },
  };
}

const outcome = (r: ICheckResponse): string =>
  (r.status?.code ?? 0) === 0
    ? 'allowed'
    : (JSON.parse(r.deniedResponse?.body ?? '{}') as { error: string }).error;

/** The i-th distinct IPv4 address of 10.0.0.0/8. */
const address = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

describe('a flood of made-up quota subjects against the memory store', () => {
  let sidecar: Sidecar;
  let client: SidecarClient;

  beforeAll(async () => {
    const dir = scratchDir('quota-flood');
    writeFileSync(join(dir, 'policies.yaml'), policies);
    sidecar = await startSidecar({
      policyPath: dir,
      env: {
        NOX_QUOTA_STORE: 'memory',
        NOX_QUOTA_MEMORY_MAX_ENTRIES: String(MAX_ENTRIES),
        NOX_LOG_LEVEL: 'warn',
        // The flood is about memory, not latency: a loaded 2-core machine must not turn it into deadline denials.
        NOX_CHECK_DEADLINE_MS: '2000',
      },
    });
    client = new SidecarClient(sidecar.grpcPort);
  });
  afterAll(async () => {
    client?.close();
    await sidecar?.stop();
  });

  const metric = async (name: string): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${sidecar.httpPort}/metrics`)).text();
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text);
    if (!m) throw new Error(`${name} is not in /metrics`);
    return Number(m[1]);
  };
  const rssMiB = async () => (await metric('nox_process_resident_memory_bytes')) / 2 ** 20;

  /** `n` checks, 64 in flight; returns how many ended each way. */
  async function flood(n: number, request: (i: number) => ICheckRequest): Promise<Record<string, number>> {
    const seen: Record<string, number> = {};
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < n) {
          const o = outcome(await client.check(request(next++), 10_000));
          seen[o] = (seen[o] ?? 0) + 1;
        }
      }),
    );
    return seen;
  }

  let offset = 0;
  const freshAddresses = (n: number) => {
    const base = offset;
    offset += n;
    return flood(n, (i) => check('/ip', address(base + i)));
  };

  it('gives made-up API keys and anonymous header values no bucket, and keeps real addresses within the cap', async () => {
    // Warm-up: code paths compiled, pools and caches at their working size, and the store
    // full (10 000 states are 1 250 addresses).
    expect(await freshAddresses(10_000)).toEqual({ allowed: 10_000 });
    expect(await metric('nox_quota_memory_entries')).toBe(MAX_ENTRIES);
    const full = await rssMiB();

    // 100 000 more addresses (800 000 states unbounded), and 20 000 each of made-up keys and
    // made-up header values.
    const rss = [full];
    for (let i = 0; i < 4; i++) {
      expect(await freshAddresses(25_000)).toEqual({ allowed: 25_000 });
      rss.push(await rssMiB());
    }
    const storeCalls = await metric('nox_quota_store_seconds_count');
    expect(await flood(20_000, (i) => check('/key', '192.0.2.1', { 'x-api-key': `made-up-${i}` }))).toEqual({
      QUOTA_SUBJECT_MISSING: 20_000,
    });
    expect(await flood(20_000, (i) => check('/tenant', '192.0.2.1', { 'x-tenant': `t-${i}` }))).toEqual({
      QUOTA_SUBJECT_MISSING: 20_000,
    });
    // Neither got as far as the store: no bucket, no state, no round trip.
    expect(await metric('nox_quota_store_seconds_count')).toBe(storeCalls);
    const after = await rssMiB();
    rss.push(after);
    expect(await metric('nox_quota_memory_entries')).toBe(MAX_ENTRIES);
    expect(await metric('nox_quota_memory_evictions_total')).toBe(8 * 110_000 - MAX_ENTRIES);
    console.log(
      `RSS (MiB) from a full store, every 25 000 addresses, then after 40 000 made-up credentials: ${rss.map((r) => r.toFixed(1)).join(' → ')}`,
    );
    // The process levels off. Unbounded, the same flood took it from about 170 to 620 MiB,
    // 130 MiB more at each step; bounded, it only swings with the garbage collector's working
    // room (peaks of 70–100 MiB over the full store seen on a busy 2-core machine) and ends
    // 25–70 MiB above where it started.
    expect(Math.max(...rss) - full).toBeLessThan(160);
    expect(after - full).toBeLessThan(128);

    // Still counting exactly: one address gets its 1000, then 429.
    expect(await flood(1000, () => check('/ip', '192.0.2.200'))).toEqual({ allowed: 1000 });
    expect(outcome(await client.check(check('/ip', '192.0.2.200')))).toBe('QUOTA_EXCEEDED');
    // IPv6 counts per /64, and an IPv4-mapped address as its IPv4 address.
    expect(await flood(1000, (i) => check('/ip', `2001:db8:7:7::${i.toString(16)}`))).toEqual({
      allowed: 1000,
    });
    expect(outcome(await client.check(check('/ip', '2001:db8:7:7:ffff::1')))).toBe('QUOTA_EXCEEDED');
    expect(outcome(await client.check(check('/ip', '::ffff:192.0.2.200')))).toBe('QUOTA_EXCEEDED');
  }, 300_000);
});
