import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import calculateSlot from 'cluster-key-slot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ICheckRequest, ICheckResponse } from '../../proto/envoy.js';
import { subjectHash } from '../../sidecar/quota/subject.js';
import { SidecarClient } from '../harness/grpcClient.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { withProbe } from '../harness/redis.js';
import { type RedisCluster, startRedisCluster } from '../harness/redisCluster.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';

// One hung Redis master (SIGSTOP: connections stay open, nothing answers, the cluster has not
// yet failed it over) fails only the subjects whose slots it owns, by their policy's
// failureMode; the circuit to that node opens, and no other. Subjects on the other masters
// are counted exactly as before. A real sidecar process, through gRPC, on a real cluster.
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
metadata: { name: closed }
spec:
  match: { paths: [{ value: /closed }] }
  failureMode: Closed
  subject: [{ type: SourceIP }]
  tiers: [{ name: free, limits: [{ name: hourly, requests: 5, window: 1h }] }]
---
apiVersion: nox.dev/v1alpha1
kind: QuotaPolicy
metadata: { name: open }
spec:
  match: { paths: [{ value: /open }] }
  failureMode: Open
  subject: [{ type: SourceIP }]
  tiers: [{ name: free, limits: [{ name: hourly, requests: 5, window: 1h }] }]
`;

function check(path: string, address: string): ICheckRequest {
  return {
    attributes: {
      source: { address: { socketAddress: { address, portValue: 40000 } } },
      request: {
        http: { method: 'GET', host: 'app.local', path, scheme: 'http', protocol: 'HTTP/1.1', headers: {} },
      },
    },
  };
}
const outcome = (r: ICheckResponse): string =>
  (r.status?.code ?? 0) === 0
    ? 'allowed'
    : (JSON.parse(r.deniedResponse?.body ?? '{}') as { error: string }).error;

describe('a circuit breaker per Redis shard', () => {
  let cluster: RedisCluster;
  let sidecar: Sidecar;
  let client: SidecarClient;
  /** Per master port: source addresses whose quota subject lives on that master. */
  const byMaster = new Map<number, string[]>();
  let stopped: number | undefined;
  let stoppedPid = 0;

  beforeAll(async () => {
    // A node timeout far longer than the test: the hung master is never failed over meanwhile.
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1, nodeTimeoutMs: 60_000 });
    const dir = scratchDir('quota-shards');
    writeFileSync(join(dir, 'policies.yaml'), policies);
    sidecar = await startSidecar({
      policyPath: dir,
      env: {
        NOX_QUOTA_STORE: 'redis-cluster',
        NOX_REDIS_NODES: cluster.startupNodes.map((n) => `${n.host}:${n.port}`).join(','),
        // Generous for the healthy shards on a loaded 2-core machine; the hung one never answers.
        NOX_REDIS_TIMEOUT_MS: '300',
        NOX_REDIS_WAIT_TIMEOUT_MS: '150',
        NOX_CHECK_DEADLINE_MS: '2000',
      },
    });
    client = new SidecarClient(sidecar.grpcPort);
    const masters = await cluster.masters();
    for (let i = 0; [...byMaster.values()].flat().length < 12; i++) {
      const address = `198.51.100.${i}`;
      const slot = calculateSlot(`{${subjectHash([`SourceIP=${address}`])}}`);
      const owner = masters.find((m) => m.slots.some(([lo, hi]) => slot >= lo && slot <= hi))!;
      const list = byMaster.get(owner.port) ?? [];
      if (list.length < 4) list.push(address);
      byMaster.set(owner.port, list);
    }
  });
  afterAll(async () => {
    if (stopped !== undefined) process.kill(stoppedPid, 'SIGCONT');
    client?.close();
    await sidecar?.stop();
    await cluster?.stop();
  });

  const metrics = async () => (await fetch(`http://127.0.0.1:${sidecar.httpPort}/metrics`)).text();
  const circuit = (text: string, port: number) =>
    new RegExp(
      `^nox_quota_redis_circuit_closed\\{[^}]*node="127\\.0\\.0\\.1:${port}"[^}]*\\} (\\d)$`,
      'm',
    ).exec(text)?.[1];

  it('fails only the subjects on a hung master, by failureMode, and counts the others exactly', async () => {
    const [hung, ...healthy] = [...byMaster.keys()];
    const hungAddresses = byMaster.get(hung!)!;
    const healthyAddresses = healthy.flatMap((p) => byMaster.get(p)!);
    // Every subject has used 1 of its 5.
    for (const a of [...hungAddresses, ...healthyAddresses]) {
      expect(outcome(await client.check(check('/closed', a)))).toBe('allowed');
    }

    stoppedPid = Number(
      /process_id:(\d+)/.exec(await withProbe(hung!, undefined, (c) => c.info('server')))![1],
    );
    process.kill(stoppedPid, 'SIGSTOP');
    stopped = hung;

    // The hung master's subjects: Closed denies, Open allows, until the breaker opens ...
    await waitUntil(
      `the circuit to 127.0.0.1:${hung} to open`,
      async () => {
        for (const a of hungAddresses) {
          expect(outcome(await client.check(check('/closed', a)))).toBe('QUOTA_STORE_UNAVAILABLE');
          expect(outcome(await client.check(check('/open', a)))).toBe('allowed');
        }
        return circuit(await metrics(), hung!) === '0';
      },
      30_000,
      { intervalMs: 10 },
    );
    // ... and then they are answered without waiting for the hung node's timeout.
    const timings: number[] = [];
    for (const a of hungAddresses) {
      const t0 = performance.now();
      expect(outcome(await client.check(check('/closed', a)))).toBe('QUOTA_STORE_UNAVAILABLE');
      timings.push(performance.now() - t0);
    }
    expect(Math.min(...timings)).toBeLessThan(150);

    // The other masters' subjects: exactly 4 more each (5 in all), then 429, as if nothing happened.
    for (const a of healthyAddresses) {
      const seen = [];
      for (let i = 0; i < 5; i++) seen.push(outcome(await client.check(check('/closed', a))));
      expect(seen, a).toEqual(['allowed', 'allowed', 'allowed', 'allowed', 'QUOTA_EXCEEDED']);
    }
    const text = await metrics();
    expect(circuit(text, hung!)).toBe('0');
    for (const p of healthy) expect(circuit(text, p)).toBe('1');
    expect(text).toMatch(
      new RegExp(
        `^nox_quota_redis_circuit_opened_total\\{[^}]*node="127\\.0\\.0\\.1:${hung}"[^}]*\\} [1-9]`,
        'm',
      ),
    );
    expect(text).not.toMatch(
      new RegExp(`nox_quota_redis_circuit_opened_total\\{[^}]*node="127\\.0\\.0\\.1:(${healthy.join('|')})"`),
    );
    expect(text).not.toMatch(/node="[^"]*@/); // an address, never a credential
    // The counts are in the healthy masters' Redis, under the subjects' hash tags.
    for (const p of healthy) {
      const keys = await withProbe(p, undefined, (c) => c.keys('nox:q:*'));
      for (const a of byMaster.get(p)!) {
        expect(keys.filter((k) => k.startsWith(`nox:q:{${subjectHash([`SourceIP=${a}`])}}:`))).toHaveLength(
          1,
        );
      }
    }

    // The master answers again: after the cooldown a trial call closes the circuit, and its
    // subjects are counted from what Redis holds: the 1 charged before, plus any call that
    // timed out here but that the node ran when it woke up. Never more than the limit.
    process.kill(stoppedPid, 'SIGCONT');
    stopped = undefined;
    const a = hungAddresses[0]!;
    await waitUntil(
      'the hung master’s subjects to be counted again',
      async () => outcome(await client.check(check('/closed', a))) !== 'QUOTA_STORE_UNAVAILABLE',
      30_000,
      { intervalMs: 50 },
    );
    let allowed = 0;
    for (;;) {
      const o = outcome(await client.check(check('/closed', a)));
      if (o !== 'allowed') {
        expect(o).toBe('QUOTA_EXCEEDED');
        break;
      }
      allowed++;
    }
    expect(allowed).toBeLessThanOrEqual(4);
    expect(circuit(await metrics(), hung!)).toBe('1');
  }, 120_000);
});
