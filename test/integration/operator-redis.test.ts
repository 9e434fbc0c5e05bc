import { join } from 'node:path';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient } from '../../common/kube/client.js';
import type { RedisCluster } from '../../common/resources/types.gen.js';
import { RedisClusterReconciler } from '../../operator/redis/reconciler.js';
import type { Applier, ObjectKey, ReconcileResult } from '../../operator/runtime/types.js';
import { fieldManager } from '../../operator/runtime/types.js';
import type { Kube } from '../harness/kube.js';
import { getObject, kubeRequest, waitForObject } from '../harness/kubeHttp.js';
import { createNoxObject, type Kubelet, startNodeCluster } from '../harness/kubelet.js';
import { testLog } from '../harness/log.js';
import { sleep, waitUntil } from '../harness/process.js';
import { runDir } from '../harness/tools.js';

/**
 * The RedisCluster reconciler against a real kube-apiserver + controller-manager (the
 * StatefulSet controller makes the Pods) and the kubelet stand-in (real redis-server per
 * pod, each on its own loopback IP). The reconciler is driven by a plain loop here that
 * honours its requeue (capped at 1 s, standing in for the watch-triggered runtime), and its
 * writes go through a minimal server-side-apply Applier.
 */

const NS = 'nox-redis';
const NAME = 'rc';
const KEYS = 300;

/** Server-side apply by path, as the operator's runtime does (field manager nox-operator, force). */
class TestApplier implements Applier {
  constructor(private readonly kc: KubeConfig) {}

  static path(apiVersion: string, kind: string, key: ObjectKey): string {
    const plural: Record<string, string> = {
      Secret: 'secrets',
      ConfigMap: 'configmaps',
      Service: 'services',
      StatefulSet: 'statefulsets',
      PodDisruptionBudget: 'poddisruptionbudgets',
      RedisCluster: 'redisclusters',
    };
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    if (!plural[kind]) throw new Error(`TestApplier: unknown kind ${kind}`);
    return `${base}/namespaces/${key.namespace}/${plural[kind]}/${key.name}`;
  }

  async #patch<T>(obj: KubernetesObject, sub = ''): Promise<T> {
    const key = { namespace: obj.metadata!.namespace!, name: obj.metadata!.name! };
    const path = `${TestApplier.path(obj.apiVersion!, obj.kind!, key)}${sub}`;
    const res = await kubeRequest(
      this.kc,
      'PATCH',
      `${path}?fieldManager=${fieldManager}&force=true&fieldValidation=Strict`,
      {
        body: JSON.stringify(obj),
        contentType: 'application/apply-patch+yaml',
      },
    );
    if (res.status !== 200 && res.status !== 201)
      throw new Error(`apply ${obj.kind} ${key.name}${sub}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body as T;
  }

  apply<T extends KubernetesObject>(obj: T): Promise<T> {
    return this.#patch<T>(obj);
  }

  async applyStatus<T extends KubernetesObject>(obj: T): Promise<void> {
    await this.#patch(obj, '/status');
  }

  async delete(apiVersion: string, kind: string, key: ObjectKey): Promise<void> {
    const res = await kubeRequest(this.kc, 'DELETE', TestApplier.path(apiVersion, kind, key));
    if (res.status !== 200 && res.status !== 202 && res.status !== 404)
      throw new Error(`delete: ${res.status}`);
  }
}

/** Reconciles one key over and over, serially; kick() runs the next one now. */
class Driver {
  running = true;
  reconciles = 0;
  last: ReconcileResult | undefined;
  #wake: (() => void) | undefined;
  readonly done: Promise<void>;

  constructor(
    private readonly reconcile: (key: ObjectKey) => Promise<ReconcileResult>,
    private readonly key: ObjectKey,
  ) {
    this.done = this.#loop();
  }

  async #loop(): Promise<void> {
    while (this.running) {
      try {
        this.last = await this.reconcile(this.key);
      } catch (e) {
        this.last = { kind: 'error', error: e };
      }
      this.reconciles++;
      const after = this.last.kind === 'requeue' ? this.last.afterMs : 1000;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(after, 1000));
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  kick(): void {
    this.#wake?.();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.kick();
    await this.done;
  }
}

describe('RedisCluster operator on a real API server with the kubelet stand-in', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let kubelet: Kubelet;
  let driver: Driver;
  let password: string;
  const t0 = Date.now();

  const get = <T>(path: string) => getObject<T>(kc, path);
  const rcPath = `/apis/nox.dev/v1alpha1/namespaces/${NS}/redisclusters/${NAME}`;
  const rc = async () => (await get<RedisCluster>(rcPath))!;
  const cond = (c: RedisCluster, type: string) => c.status?.conditions?.find((x) => x.type === type);
  /** Kicks the driver and waits for a reconcile that started after the kick to finish. */
  const reconciledAgain = async () => {
    const n = driver.reconciles;
    driver.kick();
    // n + 1 may be one already running at the kick; n + 2 started after it.
    await waitUntil('a full reconcile after the kick', () => driver.reconciles >= n + 2, 30_000, {
      intervalMs: 20,
    });
  };
  const waitStatus = (what: string, ok: (c: RedisCluster) => boolean, timeoutMs: number) =>
    waitForObject<RedisCluster>(kc, rcPath, what, (c) => c !== undefined && ok(c), timeoutMs);
  /**
   * The test's own cluster client. During a slot migration ioredis sends ASKING before the
   * redirected command without handling ASKING's promise: when that node's connection closes
   * before the reply (the move, or disconnect()), "Connection is closed" escapes as an
   * unhandled rejection. The command after it reports the failure to its caller, so each
   * node's ASKING gets a no-op catch. (Startup nodes are added after a tick: the listener,
   * attached at once, sees every node.)
   */
  const clusterClient = (c: RedisCluster) => {
    const cluster = new Cluster(
      (c.status?.nodes ?? []).map((n) => {
        const [host, port] = n.address!.split(':');
        return { host: host!, port: Number(port) };
      }),
      { redisOptions: { password }, slotsRefreshTimeout: 2000 },
    );
    cluster.on('+node', (node: Redis) => {
      const asking = node.asking.bind(node) as () => Promise<unknown>;
      node.asking = (() => {
        const p = asking();
        p.catch(() => {});
        return p;
      }) as unknown as Redis['asking'];
    });
    return cluster;
  };

  const nodeInfo = async (addr: string, section: string) => {
    const [host, port] = addr.split(':');
    const r = new Redis({
      host: host!,
      port: Number(port),
      password,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
    });
    r.on('error', () => {});
    try {
      await r.connect();
      return section === 'nodes' ? String(await r.call('CLUSTER', 'NODES')) : await r.info(section);
    } finally {
      r.disconnect();
    }
  };
  /** Replication is asynchronous: before a master dies, let its replica have every write. */
  const replicaCaughtUp = (masterAddr: string, replicaAddr: string) =>
    waitUntil(
      'the replica to have every write',
      async () => {
        const offset = (text: string, field: string) =>
          Number(new RegExp(`^${field}:(\\d+)`, 'm').exec(text)?.[1] ?? -1);
        const m = offset(await nodeInfo(masterAddr, 'replication'), 'master_repl_offset');
        const r = offset(await nodeInfo(replicaAddr, 'replication'), 'slave_repl_offset');
        return r >= m && m > 0;
      },
      20_000,
    );

  beforeAll(async () => {
    ({ kube, kc, kubelet } = await startNodeCluster(NS));
    await createNoxObject(kc, 'redisclusters', {
      kind: 'RedisCluster',
      metadata: { name: NAME, namespace: NS },
      spec: { masters: 3, replicasPerMaster: 1, image: 'redis:7.0' },
    });
    const log = pino(
      { level: 'debug' },
      pino.destination({ dest: join(runDir, 'logs', 'operator-redis-test.log'), sync: true }),
    );
    const reconciler = new RedisClusterReconciler({
      client: new KubeClient(kc),
      applier: new TestApplier(kc),
      log,
    });
    driver = new Driver((k) => reconciler.reconcile(k), { namespace: NS, name: NAME });
    testLog(`control plane, kubelet and operator up in ${Date.now() - t0} ms`);
  });

  afterAll(async () => {
    await driver?.stop();
    await kubelet?.stopAll();
    await kube?.stop();
  });

  it('forms a working 3-master, 1-replica cluster: status Ready, 16384 slots, keys through the pods’ IPs', async () => {
    const start = Date.now();
    const c = await waitStatus('RedisCluster Ready', (x) => cond(x, 'Ready')?.status === 'True', 120_000);
    testLog(
      `Ready ${Date.now() - start} ms after the control plane (${Date.now() - t0} ms in all), ${driver.reconciles} reconciles`,
    );
    expect(c.status?.slotsCovered).toBe(16384);
    expect(c.status?.readyNodes).toBe(6);
    expect(c.status?.observedGeneration).toBe(c.metadata.generation);
    expect(cond(c, 'Degraded')?.status).toBe('False');
    const nodes = c.status!.nodes!;
    expect(nodes).toHaveLength(6);
    const masters = nodes.filter((n) => n.role === 'master');
    const replicas = nodes.filter((n) => n.role === 'replica');
    expect(masters).toHaveLength(3);
    expect(new Set(replicas.map((r) => r.masterId))).toEqual(new Set(masters.map((m) => m.id)));
    for (const r of replicas) expect(masters.find((m) => m.id === r.masterId)!.pod).not.toBe(r.pod);
    const ips = nodes.map((n) => n.address!.split(':')[0]!);
    expect(new Set(ips).size).toBe(6);
    for (const ip of ips) expect(ip).toMatch(/^127\.0\.\d+\.\d+$/);
    expect(ips).not.toContain('127.0.0.1');

    // The children, all owned by the RedisCluster.
    const owned = (o: KubernetesObject | undefined) => o?.metadata?.ownerReferences?.[0]?.uid;
    for (const path of [
      `/api/v1/namespaces/${NS}/secrets/${NAME}-auth`,
      `/api/v1/namespaces/${NS}/configmaps/${NAME}-config`,
      `/api/v1/namespaces/${NS}/services/${NAME}-nodes`,
      `/api/v1/namespaces/${NS}/services/${NAME}`,
      `/apis/apps/v1/namespaces/${NS}/statefulsets/${NAME}`,
      `/apis/policy/v1/namespaces/${NS}/poddisruptionbudgets/${NAME}`,
    ])
      expect(owned(await get<KubernetesObject>(path)), path).toBe(c.metadata.uid);

    const secret = await get<{ data: { password: string } }>(`/api/v1/namespaces/${NS}/secrets/${NAME}-auth`);
    password = Buffer.from(secret!.data.password, 'base64').toString();
    // Without the password a node refuses commands.
    const anon = new Redis({
      host: ips[0],
      port: 6379,
      lazyConnect: true,
      enableReadyCheck: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    anon.on('error', () => {});
    await anon.connect();
    await expect(anon.get('k')).rejects.toThrow(/NOAUTH/);
    anon.disconnect();

    const client = clusterClient(c);
    try {
      for (let i = 0; i < KEYS; i++) await client.set(`key:${i}`, `value-${i}`);
      for (let i = 0; i < KEYS; i++) expect(await client.get(`key:${i}`)).toBe(`value-${i}`);
      // Keys really are spread over the three masters.
      const sizes = await Promise.all(client.nodes('master').map((n) => n.dbsize()));
      expect(sizes.every((s) => s > 0)).toBe(true);
    } finally {
      client.disconnect();
    }
    // The password survives reconciles: it was generated once.
    await reconciledAgain();
    const again = await get<{ data: { password: string } }>(`/api/v1/namespaces/${NS}/secrets/${NAME}-auth`);
    expect(again!.data.password).toBe(secret!.data.password);
  }, 180_000);

  it('restarts a crashed replica in place (same IP): the pod goes not ready and back', async () => {
    const c = await rc();
    const replica = c.status!.nodes!.find((n) => n.role === 'replica')!;
    const before = kubelet.pods().find((p) => p.name === replica.pod)!;
    const start = Date.now();
    await kubelet.kill(replica.pod!);
    await waitUntil(
      'the replica pod to restart',
      async () => {
        const p = kubelet.pods().find((x) => x.name === replica.pod)!;
        return p.restarts === before.restarts + 1 && p.ready;
      },
      30_000,
    );
    const pod = await get<{ status: { podIP: string; containerStatuses: { restartCount: number }[] } }>(
      `/api/v1/namespaces/${NS}/pods/${replica.pod}`,
    );
    expect(pod!.status.podIP).toBe(before.ip);
    expect(pod!.status.containerStatuses[0]!.restartCount).toBe(before.restarts + 1);
    await waitStatus('Ready again', (x) => cond(x, 'Ready')?.status === 'True', 60_000);
    testLog(`replica crash → Ready again in ${Date.now() - start} ms`);
  }, 120_000);

  it('heals the loss of a master: Degraded, the replica takes over, the pod returns as a replica, Ready; keys survive', async () => {
    const c = await rc();
    const master = c.status!.nodes!.find((n) => n.role === 'master')!;
    const replica = c.status!.nodes!.find((n) => n.masterId === master.id)!;
    await replicaCaughtUp(master.address!, replica.address!);

    const start = Date.now();
    await kubelet.stop(master.pod!); // SIGKILL, and the kubelet keeps it down
    const degraded = await waitStatus('Degraded', (x) => cond(x, 'Degraded')?.status === 'True', 30_000);
    const tDegraded = Date.now() - start;
    expect(cond(degraded, 'Ready')?.status).toBe('False');
    expect(cond(degraded, 'Degraded')?.reason).toMatch(/NodesNotReady|SlotsNotCovered/);

    const failedOver = await waitStatus(
      'the replica to take over',
      (x) =>
        x.status?.slotsCovered === 16384 &&
        x.status.nodes?.find((n) => n.pod === replica.pod)?.role === 'master',
      60_000,
    );
    const tFailover = Date.now() - start;
    expect(cond(failedOver, 'Degraded')?.status).toBe('True'); // still one pod down

    await kubelet.resume(master.pod!);
    const healed = await waitStatus(
      'Ready after the pod returned',
      (x) => cond(x, 'Ready')?.status === 'True',
      90_000,
    );
    const tReady = Date.now() - start;
    testLog(
      `master kill: Degraded after ${tDegraded} ms, failover after ${tFailover} ms, Ready after ${tReady} ms`,
    );
    const back = healed.status!.nodes!.find((n) => n.pod === master.pod)!;
    expect(back.role).toBe('replica');
    expect(back.masterId).toBe(replica.id);
    expect(healed.status?.slotsCovered).toBe(16384);

    const client = clusterClient(healed);
    try {
      for (let i = 0; i < KEYS; i++) expect(await client.get(`key:${i}`)).toBe(`value-${i}`);
    } finally {
      client.disconnect();
    }
  }, 240_000);

  it('replaces a deleted master pod: new IP and empty node, the old node forgotten, keys kept by the promoted replica', async () => {
    const c = await rc();
    const master = c.status!.nodes!.find((n) => n.role === 'master')!;
    const replica = c.status!.nodes!.find((n) => n.masterId === master.id)!;
    await replicaCaughtUp(master.address!, replica.address!);
    const podPath = `/api/v1/namespaces/${NS}/pods/${master.pod}`;
    const before = (await get<{ metadata: { uid: string } }>(podPath))!;

    const start = Date.now();
    expect((await kubeRequest(kc, 'DELETE', podPath)).status).toBe(200);
    await waitUntil(
      'the StatefulSet to replace the pod',
      async () => {
        const p = await get<{ metadata: { uid: string } }>(podPath);
        return p !== undefined && p.metadata.uid !== before.metadata.uid;
      },
      60_000,
    );
    const tReplaced = Date.now() - start;
    const healed = await waitStatus(
      'Ready with the new node',
      (x) =>
        cond(x, 'Ready')?.status === 'True' &&
        x.status?.nodes?.find((n) => n.pod === master.pod)?.id !== master.id,
      120_000,
    );
    const tReady = Date.now() - start;
    testLog(`master pod deleted: replaced after ${tReplaced} ms, Ready after ${tReady} ms`);
    const now = healed.status!.nodes!.find((n) => n.pod === master.pod)!;
    expect(now.address).not.toBe(master.address);
    expect(now.role).toBe('replica');
    expect(now.masterId).toBe(replica.id);
    expect(healed.status!.nodes!.find((n) => n.pod === replica.pod)!.role).toBe('master');
    for (const n of healed.status!.nodes!)
      expect(await nodeInfo(n.address!, 'nodes')).not.toContain(master.id!);

    const client = clusterClient(healed);
    try {
      for (let i = 0; i < KEYS; i++) expect(await client.get(`key:${i}`)).toBe(`value-${i}`);
    } finally {
      client.disconnect();
    }
  }, 240_000);

  it('repairs a deleted child ConfigMap and client Service on the next reconcile', async () => {
    const cmPath = `/api/v1/namespaces/${NS}/configmaps/${NAME}-config`;
    const svcPath = `/api/v1/namespaces/${NS}/services/${NAME}`;
    const before = await get<{ data: Record<string, string>; metadata: { uid: string } }>(cmPath);
    for (const p of [cmPath, svcPath]) expect((await kubeRequest(kc, 'DELETE', p)).status).toBe(200);
    const start = Date.now();
    driver.kick();
    await waitUntil(
      'ConfigMap and Service back',
      async () => (await get(cmPath)) !== undefined && (await get(svcPath)) !== undefined,
      15_000,
    );
    testLog(`children repaired in ${Date.now() - start} ms`);
    const after = await get<{ data: Record<string, string>; metadata: { uid: string } }>(cmPath);
    expect(after!.metadata.uid).not.toBe(before!.metadata.uid);
    expect(after!.data).toEqual(before!.data);
    const c = await rc();
    expect(cond(c, 'Ready')?.status).toBe('True');
  }, 60_000);

  it('scales out from 3 to 4 masters: slots move with their keys, evenly, and the new master gets a replica', async () => {
    // A writer keeps going through the move (MOVED/ASK redirections); what it was told is
    // stored must all be there afterwards.
    const writer = clusterClient(await rc());
    const acked: number[] = [];
    let writing = true;
    const writes = (async () => {
      for (let i = 0; writing; i++) {
        try {
          await writer.set(`live:${i}`, `v${i}`);
          acked.push(i);
          // A steady load, not a flood that would starve the operator of the shared CPU.
          if (i % 20 === 0) await sleep(5);
        } catch {
          await sleep(20); // a client backing off
        }
      }
    })();
    const r = await kubeRequest(kc, 'PATCH', rcPath, {
      body: JSON.stringify({ spec: { masters: 4 } }),
      contentType: 'application/merge-patch+json',
    });
    expect(r.status).toBe(200);
    const start = Date.now();
    driver.kick();
    const slotsOf = (spec: string | undefined) =>
      (spec ?? '')
        .split(',')
        .filter((x) => x !== '')
        .reduce((n, part) => {
          const [lo, hi] = part.split('-').map(Number);
          return n + (hi ?? lo!) - lo! + 1;
        }, 0);
    const scaled = await waitStatus(
      '4 masters with even slots, 4 replicas, Ready',
      (c) =>
        cond(c, 'Ready')?.status === 'True' &&
        c.status?.observedGeneration === c.metadata.generation &&
        (c.status?.nodes ?? []).filter((n) => n.role === 'master').length === 4 &&
        (c.status?.nodes ?? []).filter((n) => n.role === 'replica').length === 4,
      240_000,
    );
    testLog(`scale-out to 4 masters: Ready after ${Date.now() - start} ms`);
    const masters = scaled.status!.nodes!.filter((n) => n.role === 'master');
    const counts = masters.map((m) => slotsOf(m.slots));
    expect(counts.reduce((x, y) => x + y, 0)).toBe(16384);
    for (const c of counts) expect(Math.abs(c - 4096)).toBeLessThanOrEqual(41);
    writing = false;
    await writes;
    // QUIT after the last reply, rather than dropping connections with replies outstanding.
    await writer.quit().catch(() => {});
    const client = clusterClient(scaled);
    try {
      for (let i = 0; i < KEYS; i++) expect(await client.get(`key:${i}`)).toBe(`value-${i}`);
      const missing: number[] = [];
      for (let from = 0; from < acked.length; from += 500) {
        const batch = acked.slice(from, from + 500);
        const values = await Promise.all(batch.map((i) => client.get(`live:${i}`)));
        batch.forEach((i, k) => {
          if (values[k] !== `v${i}`) missing.push(i);
        });
      }
      testLog(`scale-out: ${acked.length} writes acknowledged during the move, ${missing.length} missing`);
      expect(acked.length).toBeGreaterThan(100);
      expect(missing).toEqual([]);
    } finally {
      client.disconnect();
    }
  }, 300_000);

  it('refuses a scale-in that would remove pods serving slots: status says why, the StatefulSet keeps its size', async () => {
    const r = await kubeRequest(kc, 'PATCH', rcPath, {
      body: JSON.stringify({ spec: { masters: 3 } }),
      contentType: 'application/merge-patch+json',
    });
    expect(r.status).toBe(200);
    driver.kick();
    const blocked = await waitStatus(
      'Ready=False ScaleInBlocked',
      (c) =>
        c.status?.observedGeneration === c.metadata.generation &&
        cond(c, 'Ready')?.reason === 'ScaleInBlocked',
      30_000,
    );
    expect(cond(blocked, 'Ready')?.message).toContain('serve hash slots');
    // Later reconciles keep refusing: the StatefulSet is untouched after another full one.
    await reconciledAgain();
    const sts = await get<{ spec: { replicas: number } }>(
      `/apis/apps/v1/namespaces/${NS}/statefulsets/${NAME}`,
    );
    expect(sts?.spec.replicas).toBe(8);
    expect(kubelet.pods().filter((p) => p.running)).toHaveLength(8);
    expect(cond(await rc(), 'Ready')?.reason).toBe('ScaleInBlocked');
  }, 60_000);
});
