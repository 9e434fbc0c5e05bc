import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisCluster } from '../../common/resources/types.gen.js';
import { RedisQuotaStore } from '../../sidecar/quota/redisStore.js';
import type { Kube } from '../harness/kube.js';
import { getObject, kubeRequest, waitForObject } from '../harness/kubeHttp.js';
import { createNoxObject, type Kubelet, startNodeCluster } from '../harness/kubelet.js';
import { testLog } from '../harness/log.js';
import { startOperator } from '../harness/operator.js';
import { type Service, waitUntil } from '../harness/process.js';

/**
 * The built nox-operator (`node dist/operator/main.js`), running as an identity with exactly
 * the RBAC operator/rbac.ts declares, against a real kube-apiserver + controller-manager
 * (StatefulSet controller, garbage collector) and the kubelet stand-in (real redis-server
 * per pod on 127.0.x.y). Nothing here drives the reconciler: the operator's own watches do.
 */

const NS = 'redis-e2e';
const SYSTEM_NS = 'nox-system';
const NAME = 'quota';
const _USER = 'nox-operator';
const HEAL_RUNS = 5;
const rcPath = `/apis/nox.dev/v1alpha1/namespaces/${NS}/redisclusters/${NAME}`;
const children = [
  `/api/v1/namespaces/${NS}/secrets/${NAME}-auth`,
  `/api/v1/namespaces/${NS}/configmaps/${NAME}-config`,
  `/api/v1/namespaces/${NS}/services/${NAME}-nodes`,
  `/api/v1/namespaces/${NS}/services/${NAME}`,
  `/apis/apps/v1/namespaces/${NS}/statefulsets/${NAME}`,
  `/apis/policy/v1/namespaces/${NS}/poddisruptionbudgets/${NAME}`,
];

const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);

describe('nox-operator (built) runs RedisClusters end to end', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let kubelet: Kubelet;
  let op: Service;
  let _opPort: number;
  const t0 = Date.now();

  const get = <T>(path: string) => getObject<T>(kc, path);
  const rc = async () => get<RedisCluster>(rcPath);
  const cond = (c: RedisCluster | undefined, type: string) =>
    c?.status?.conditions?.find((x) => x.type === type);
  const healthy = (c: RedisCluster | undefined) =>
    cond(c, 'Ready')?.status === 'True' &&
    c?.status?.slotsCovered === 16384 &&
    c.status.readyNodes === 6 &&
    c.status.observedGeneration === c.metadata.generation;
  const waitStatus = (what: string, ok: (c: RedisCluster | undefined) => boolean, timeoutMs: number) =>
    waitForObject<RedisCluster>(kc, rcPath, what, ok, timeoutMs, op);
  const password = async () => {
    const s = await get<{ data: { password: string } }>(`/api/v1/namespaces/${NS}/secrets/${NAME}-auth`);
    return Buffer.from(s!.data.password, 'base64').toString('utf8');
  };
  const podIPs = async () => {
    const list = await get<{ items: { status?: { podIP?: string } }[] }>(
      `/api/v1/namespaces/${NS}/pods?labelSelector=${encodeURIComponent(`app.kubernetes.io/instance=${NAME}`)}`,
    );
    return (list?.items ?? []).map((p) => p.status?.podIP).filter((ip): ip is string => !!ip);
  };

  /**
   * Polls the status (every 50 ms) after a kill until it has been seen unhealthy and then
   * healthy again, with the Ready condition's transition after the kill (seconds precision):
   * a status that never noticed the loss does not count as healed.
   */
  const healed = async (run: number, killedAt: number, killedSecond: string) => {
    let sawUnhealthy = false;
    let lastLine = '';
    let last: RedisCluster | undefined;
    await waitUntil(
      `run ${run}: healed`,
      async () => {
        last = await rc();
        const ready = cond(last, 'Ready');
        const line = `Ready=${ready?.status}/${ready?.reason} since ${ready?.lastTransitionTime} slots=${last?.status?.slotsCovered} readyNodes=${last?.status?.readyNodes}`;
        if (line !== lastLine) testLog(`run ${run} +${Date.now() - killedAt} ms: ${line}`);
        lastLine = line;
        if (!healthy(last)) sawUnhealthy = true;
        else if (sawUnhealthy && (ready?.lastTransitionTime ?? '') >= killedSecond) return true;
        return false;
      },
      Math.max(0, killedAt + 120_000 - Date.now()),
      { svc: op, intervalMs: 50 },
    ).catch((e: Error) => {
      throw new Error(
        `${e.message} (saw it unhealthy: ${sawUnhealthy}); last status: ${JSON.stringify(last?.status, null, 1)}`,
      );
    });
  };

  beforeAll(async () => {
    ({ kube, kc, kubelet } = await startNodeCluster(NS));
    op = (await startOperator(kube, { name: 'nox-operator-redis-e2e', systemNamespace: SYSTEM_NS })).service;
    await createNoxObject(kc, 'redisclusters', {
      kind: 'RedisCluster',
      metadata: { name: NAME, namespace: NS },
      spec: { masters: 3, replicasPerMaster: 1, image: 'redis:7.0' },
    });
    testLog(`control plane, kubelet and built operator up in ${Date.now() - t0} ms`);
  }, 120_000);

  afterAll(async () => {
    await op?.stop();
    await kubelet?.stopAll();
    await kube?.stop();
  });

  it('makes a 3-master, 1-replica RedisCluster Ready', async () => {
    const start = Date.now();
    const c = await waitStatus('RedisCluster Ready', healthy, 120_000);
    testLog(`RedisCluster Ready ${Date.now() - start} ms after creation`);
    const nodes = c.status!.nodes!;
    expect(nodes.filter((n) => n.role === 'master')).toHaveLength(3);
    expect(nodes.filter((n) => n.role === 'replica')).toHaveLength(3);
    for (const path of children) {
      const o = await get<KubernetesObject>(path);
      expect(o?.metadata?.ownerReferences?.[0]?.uid, path).toBe(c.metadata.uid);
      expect(o?.metadata?.ownerReferences?.[0]?.controller, path).toBe(true);
    }
  }, 150_000);

  it('serves the sidecar: RedisQuotaStore in cluster mode admits exactly `limit` checks', async () => {
    const ips = await podIPs();
    expect(ips).toHaveLength(6);
    const store = new RedisQuotaStore({
      nodes: ips.map((host) => ({ host, port: 6379 })),
      cluster: true,
      password: await password(),
      timeoutMs: 1000,
      waitReplicas: 1,
      log: pino({ level: 'silent' }),
      registry: new Registry(),
    });
    try {
      await store.ready();
      const limit = 7;
      // Back to back ...
      const serial = { key: '{e2e:serial}:h', requests: limit, windowMs: 3_600_000 };
      const results: boolean[] = [];
      for (let i = 0; i < limit + 3; i++)
        results.push((await store.take([serial], 1, Date.now(), false)).allowed);
      expect(results).toEqual([...Array(limit).fill(true), false, false, false]);
      // ... and all at once, on every shard.
      for (const subject of ['a', 'b', 'c', 'd', 'e', 'f']) {
        const l = { key: `{e2e:${subject}}:h`, requests: limit, windowMs: 3_600_000 };
        const burst = await Promise.all(
          Array.from({ length: limit * 3 }, () => store.take([l], 1, Date.now(), false)),
        );
        expect(burst.filter((r) => r.allowed)).toHaveLength(limit);
      }
    } finally {
      await store.close();
    }
  }, 60_000);

  it(`heals the loss of a master process (${HEAL_RUNS} runs)`, async () => {
    const times: number[] = [];
    for (let run = 0; run < HEAL_RUNS; run++) {
      const before = await waitStatus(`healthy before run ${run + 1}`, healthy, 120_000);
      const master = before.status!.nodes!.find((n) => n.role === 'master')!;
      testLog(`run ${run + 1}: before the kill, Ready=${JSON.stringify(cond(before, 'Ready'))}`);
      const killedAt = Date.now();
      const killedSecond = `${new Date(killedAt).toISOString().slice(0, 19)}Z`;
      // SIGKILL; the kubelet restarts the container (same IP, same volume) after its restart delay.
      await kubelet.kill(master.pod!);
      await healed(run + 1, killedAt, killedSecond);
      const ms = Date.now() - killedAt;
      times.push(ms);
      const after = await rc();
      const role = after?.status?.nodes?.find((n) => n.pod === master.pod)?.role;
      testLog(`heal run ${run + 1}: master ${master.pod} killed → Ready in ${ms} ms (now ${role})`);
      // Back to a steady state before the next run: every pod running and ready.
      await waitUntil(
        'every pod ready',
        async () => kubelet.pods().filter((p) => p.running && p.ready).length === 6,
        60_000,
      );
    }
    const s = sorted(times);
    const median = s[Math.floor(s.length / 2)]!;
    testLog(
      `REDIS_HEAL_MS min=${s[0]} median=${median} max=${s.at(-1)} runs=${s.length} all=${times.join(',')}`,
    );
    expect(times).toHaveLength(HEAL_RUNS);
  }, 700_000);

  it('repairs a deleted child StatefulSet', async () => {
    const path = `/apis/apps/v1/namespaces/${NS}/statefulsets/${NAME}`;
    const before = (await get<KubernetesObject>(path))!;
    const c = (await rc())!;
    const oldPods = new Set(kubelet.pods().map((p) => p.uid));
    const start = Date.now();
    expect((await kubeRequest(kc, 'DELETE', path)).status).toBe(200);
    await waitUntil(
      'the StatefulSet to be recreated',
      async () => {
        const s = await get<KubernetesObject>(path);
        return s !== undefined && s.metadata?.uid !== before.metadata?.uid;
      },
      30_000,
      op,
    );
    const tBack = Date.now() - start;
    const after = (await get<KubernetesObject>(path))!;
    expect(after.metadata?.ownerReferences?.[0]?.uid).toBe(c.metadata.uid);
    // The status said Ready before the deletion too: wait for the new pods behind it.
    await waitUntil(
      'six new pods running',
      async () => {
        const now = kubelet.pods().filter((p) => p.running && p.ready);
        return now.length === 6 && now.every((p) => !oldPods.has(p.uid));
      },
      180_000,
      op,
    );
    await waitStatus('Ready after the StatefulSet was recreated', healthy, 180_000);
    testLog(`StatefulSet deleted: recreated after ${tBack} ms, cluster Ready after ${Date.now() - start} ms`);
  }, 240_000);

  it('deleting the RedisCluster garbage-collects its children and the kubelet stops the processes', async () => {
    expect(kubelet.pods().filter((p) => p.running).length).toBeGreaterThan(0);
    const start = Date.now();
    expect((await kubeRequest(kc, 'DELETE', rcPath)).status).toBe(200);
    await waitUntil(
      'children garbage-collected',
      async () => {
        for (const p of children) if ((await get(p)) !== undefined) return false;
        return (await podIPs()).length === 0;
      },
      90_000,
    );
    const tGone = Date.now() - start;
    await waitUntil('the kubelet to stop every pod', async () => kubelet.pods().length === 0, 60_000);
    testLog(
      `RedisCluster deleted: children gone after ${tGone} ms, processes stopped after ${Date.now() - start} ms`,
    );
    expect(await rc()).toBeUndefined();
    expect(op.exited()).toBe(false);
  }, 180_000);
});
