import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { helm } from '../harness/helm.js';
import { testLog } from '../harness/log.js';
import { healthyWith, newPrimary, type PgClusterView, pgClusterView } from '../harness/pgCluster.js';
import {
  type ConnectTo,
  connectPg,
  longestGap,
  overlappingAcceptance,
  startSampler,
  startWriters,
} from '../harness/pgHistory.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { tool } from '../harness/tools.js';
import { builtImages, imageRef, splitRef } from './builtImages.js';
import { startNode, type TestNode } from './node.js';

/**
 * The partition of issue 13 on a real node (the kubelet stand-in's suite has the others): the
 * operator's pods cannot reach the primary's address while the replicas still do, and the
 * primary's own kubelet keeps running it. Writers go through the -rw Service as an application
 * does; a sampler writes to every instance's pod IP directly. Every acknowledged commit must be
 * found afterwards, and no two instances may accept writes in overlapping intervals.
 */
const NS = 'nox';
const RELEASE = 'nox';
const CLUSTER = `${RELEASE}-postgres`;
const MINUTE = 60_000;
const INSTANCES = 3;

let node: TestNode;
let view: PgClusterView;
let app: ConnectTo;
/** The operator pods' network namespaces with a rule in them, and the rule. */
const cuts: { pid: string; rule: string[] }[] = [];

const kubectlJson = async <T>(args: string[]): Promise<T> =>
  JSON.parse(await node.kubectl([...args, '-o', 'json'])) as T;

function values(): string {
  const v = {
    image: { ...splitRef(imageRef('nox')), pullPolicy: 'Never' },
    authz: { enabled: false },
    tests: { enabled: false },
    postgresCluster: {
      enabled: true,
      spec: {
        image: imageRef('postgres'),
        instances: INSTANCES,
        synchronous: { mode: 'Quorum', number: 1 },
        storage: { size: '1Gi' },
        migrations: { enabled: false },
      },
    },
  };
  const file = join(scratchDir('helm-values'), 'values.yaml');
  writeFileSync(file, stringify(v));
  return file;
}

/** The main process of each running container of the pods `selector` picks. */
async function containerPids(selector: string): Promise<string[]> {
  const pods = await kubectlJson<{ items: { metadata: { name: string } }[] }>([
    '-n',
    NS,
    'get',
    'pods',
    '-l',
    selector,
  ]);
  const pids: string[] = [];
  for (const p of pods.items) {
    const ids = (await node.crictl(['ps', '-q', '--label', `io.kubernetes.pod.name=${p.metadata.name}`]))
      .split('\n')
      .filter(Boolean);
    for (const id of ids) {
      const info = JSON.parse(await node.crictl(['inspect', id])) as { info: { pid: number } };
      pids.push(String(info.info.pid));
    }
  }
  return pids;
}

/** iptables in the network namespace of process `pid` (a pod's). */
const iptablesIn = (pid: string, args: string[]) =>
  node.exec('nsenter', [`--net=/proc/${pid}/ns/net`, tool('iptables'), '-w', ...args]);

async function healPartition(): Promise<void> {
  for (const cut of cuts.splice(0)) await iptablesIn(cut.pid, ['-D', 'OUTPUT', ...cut.rule]).catch(() => {});
}

describe('PostgresCluster on a real node', () => {
  beforeAll(async () => {
    node = await startNode({
      images: builtImages()
        .filter((i) => i.name === 'nox' || i.name === 'postgres')
        .map((i) => i.archive),
    });
    testLog('node started', { ms: node.startMs });
    const res = await helm(
      ['install', RELEASE, 'charts/nox', '-n', NS, '--create-namespace', '-f', values(), '--wait'],
      { kubeconfig: node.kubeconfigPath, timeoutMs: 10 * MINUTE },
    );
    if (res.code !== 0) throw new Error(`helm install failed (${res.code}):\n${res.stderr}\n${res.stdout}`);
    const kc = new KubeConfig();
    kc.loadFromFile(node.kubeconfigPath);
    view = pgClusterView(kc, NS, CLUSTER);
    await view.waitStatus('PostgresCluster Ready with its replicas', healthyWith(INSTANCES - 1), 10 * MINUTE);
    app = await view.appConnection();
    const c = await connectPg({ ...app, timeoutMs: 10_000 });
    await c.query('CREATE TABLE history (run int NOT NULL, seq bigint NOT NULL, PRIMARY KEY (run, seq))');
    await c.query(
      'CREATE TABLE sampler (run int NOT NULL, instance text NOT NULL, seq int NOT NULL, PRIMARY KEY (run, seq))',
    );
    await c.end();
  }, 30 * MINUTE);

  afterAll(async () => {
    await healPartition();
    await node?.stop();
  }, 5 * MINUTE);

  it(
    'the operator cut off from the primary (replicas still reach it): one promoted, every acknowledged commit kept, never two primaries',
    async () => {
      const before = await view.waitStatus('healthy', healthyWith(INSTANCES - 1), 5 * MINUTE);
      const old = before.status!.currentPrimary!;
      const instances = async () =>
        (
          await Promise.all(
            Array.from({ length: INSTANCES }, async (_, i) => {
              const pod = `${CLUSTER}-${i}`;
              return { pod, ip: (await view.podIP(pod)) ?? '' };
            }),
          )
        ).filter((x) => x.ip);
      const writers = startWriters(async () => app, 'history', 1);
      const sampler = startSampler(instances, app, 'sampler', 1);
      try {
        await waitUntil('writes flowing', async () => writers.acked.length > 20, MINUTE);
        const oldIP = (await view.podIP(old))!;
        const rule = ['-p', 'tcp', '-d', oldIP, '--dport', '5432', '-j', 'DROP'];
        const operators = await containerPids('app.kubernetes.io/component=operator');
        expect(operators.length, 'operator containers').toBeGreaterThan(0);
        const faultAt = Date.now();
        for (const pid of operators) {
          await iptablesIn(pid, ['-I', 'OUTPUT', ...rule]);
          cuts.push({ pid, rule });
        }
        const after = await view.waitStatus(
          `a new primary after cutting the operator off from ${old}`,
          newPrimary(old),
          2 * MINUTE,
        );
        const promoted = after.status!.currentPrimary!;
        const seenAt = Date.now();
        await waitUntil(
          'writes acknowledged by the new primary',
          async () => writers.ackTimes.filter((t) => t > seenAt).length >= 20,
          2 * MINUTE,
        );
        const writable = writers.ackTimes.filter((t) => t > seenAt).sort((a, b) => a - b)[19]!;
        await healPartition();
        await view.waitStatus(
          'healthy again with every replica streaming from the new primary',
          (c) => healthyWith(INSTANCES - 1)(c) && c?.status?.currentPrimary === promoted,
          5 * MINUTE,
        );
        await writers.stop();
        await sampler.stop();

        const c = await connectPg({ ...app, host: (await view.podIP(promoted))!, timeoutMs: 10_000 });
        const rows = (await c.query<{ seq: string }>('SELECT seq FROM history WHERE run = 1')).rows;
        const samples = (await c.query<{ seq: number }>('SELECT seq FROM sampler WHERE run = 1')).rows;
        await c.end();
        const present = new Set(rows.map((r) => Number(r.seq)));
        const lost = writers.acked.filter((s) => !present.has(s));
        const sampled = new Set(samples.map((r) => r.seq));
        const lostSamples = sampler.accepted.filter((w) => !sampled.has(w.seq));
        const overlaps = overlappingAcceptance(sampler.accepted);
        const byInstance = (pod: string) => sampler.accepted.filter((w) => w.instance === pod);
        const lastOld = byInstance(old).reduce((m, w) => Math.max(m, w.ackedAt), 0);
        const unavailableMs = longestGap(writers.ackTimes, faultAt, writable);
        testLog(
          `real node, operator partitioned from the primary: ${old} → ${promoted} after ${seenAt - faultAt} ms; acknowledged ${writers.acked.length}, found ${writers.acked.length - lost.length}; sampler accepted ${sampler.accepted.length}, found ${sampler.accepted.length - lostSamples.length}; writes unavailable for ${unavailableMs} ms; last write accepted by ${old} at +${lastOld - faultAt} ms`,
        );
        expect(lost, 'acknowledged rows missing').toEqual([]);
        expect(lostSamples, 'acknowledged sampler writes missing').toEqual([]);
        expect(
          overlaps.map(([a, b]) => `${a.instance}#${a.seq} ~ ${b.instance}#${b.seq}`),
          'writes acknowledged by two instances in overlapping intervals',
        ).toEqual([]);
        expect(
          byInstance(promoted).some((w) => w.sentAt > faultAt),
          `${promoted} accepted a sampler write after the fault`,
        ).toBe(true);
      } finally {
        await healPartition();
        await writers.stop();
        await sampler.stop();
      }
    },
    20 * MINUTE,
  );
});
