import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeObject } from '../../common/kube/client.js';
import { configMaps, secrets } from '../../common/kube/resources.js';
import { createLogger } from '../../common/logger.js';
import { Controller } from '../../operator/runtime/controller.js';
import { Manager } from '../../operator/runtime/manager.js';
import type { ObjectKey, ReconcileResult, Reconciler } from '../../operator/runtime/types.js';
import { createNamespace, installCrds } from '../harness/crds.js';
import { apiServerRefuses, base64, etcdRequest, type Kube, startKube } from '../harness/kube.js';
import { kubeRequest, serverSideApply } from '../harness/kubeHttp.js';
import { testLog } from '../harness/log.js';
import { freePort } from '../harness/ports.js';
import { type Service, sleep, start, waitUntil } from '../harness/process.js';
import { metricSum, scrapedMetric } from '../harness/registry.js';
import { repoRoot } from '../harness/tools.js';

/**
 * The operator runtime against a real kube-apiserver: leader election between built
 * `nox-operator` processes, and, in-process, the controller semantics (per-key
 * serialization, coalescing, backoff, requeue, owned children, resync, relist after a
 * compacted history) and server-side apply.
 */

const entry = join(repoRoot, 'dist', 'operator', 'main.js');
const log = createLogger('operator-runtime-test', { level: process.env.NOX_LOG_LEVEL ?? 'silent' });
const SYSTEM_NS = 'nox-system';
const LEASE = { durationMs: 3000, renewDeadlineMs: 2000, retryMs: 500 };

interface Lease {
  spec?: {
    holderIdentity?: string;
    leaseTransitions?: number;
    leaseDurationSeconds?: number;
    renewTime?: string;
  };
}

describe('operator runtime against a real kube-apiserver', () => {
  let kube: Kube;
  let kc: KubeConfig;

  beforeAll(async () => {
    const t0 = Date.now();
    kube = await startKube();
    kc = kube.kubeConfig();
    await installCrds(kc);
    await createNamespace(kc, SYSTEM_NS);
    await createNamespace(kc, 'rt');
    await createNamespace(kc, 'le');
    testLog(`setup (kube-apiserver, CRDs): ${Date.now() - t0} ms`);
  });
  afterAll(async () => {
    await kube?.stop();
  });

  describe('leader election between nox-operator processes', () => {
    const running = new Map<string, { svc: Service; port: number }>();
    afterAll(async () => {
      await Promise.all([...running.values()].map((o) => o.svc.stop()));
    });

    const startOperator = async (identity: string) => {
      if (!existsSync(entry)) throw new Error(`${entry} is missing; run \`npm run build\``);
      const port = await freePort();
      const svc = start(`nox-operator-${identity}`, process.execPath, [entry], {
        env: {
          NOX_KUBECONFIG: kube.kubeconfigPath,
          NOX_HTTP_PORT: String(port),
          NOX_OPERATOR_NAMESPACE: SYSTEM_NS,
          NOX_OPERATOR_IDENTITY: identity,
          NOX_WATCH_NAMESPACES: 'le',
          NOX_LEASE_DURATION_MS: String(LEASE.durationMs),
          NOX_LEASE_RENEW_DEADLINE_MS: String(LEASE.renewDeadlineMs),
          NOX_LEASE_RETRY_PERIOD_MS: String(LEASE.retryMs),
          NOX_LOG_LEVEL: 'info',
        },
      });
      await waitUntil(
        `${identity} /readyz`,
        async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200,
        30_000,
        svc,
      );
      running.set(identity, { svc, port });
      return { svc, port };
    };
    const lease = async (): Promise<Lease | undefined> => {
      const r = await kubeRequest(
        kc,
        'GET',
        `/apis/coordination.k8s.io/v1/namespaces/${SYSTEM_NS}/leases/nox-operator`,
      );
      return r.status === 200 ? (r.body as Lease) : undefined;
    };
    const leaders = async () => {
      const out: string[] = [];
      for (const [id, o] of running)
        if (!o.svc.exited() && (await scrapedMetric(o.port, 'nox_operator_leader')) === 1) out.push(id);
      return out;
    };
    /** Polls until exactly one process says it leads and the Lease names it; returns it and the time taken. */
    const oneLeader = async (timeoutMs: number, not?: string) => {
      let leader: string | undefined;
      let two: string[] | undefined;
      const ms = await waitUntil(
        'a single leader named by the Lease',
        async () => {
          const l = await leaders();
          const holder = (await lease())?.spec?.holderIdentity;
          if (l.length > 1) two = l; // ends the wait: two leaders fail the test at once
          if (l.length === 1 && holder && l[0] === holder && holder !== not) leader = holder;
          return two !== undefined || leader !== undefined;
        },
        timeoutMs,
        { intervalMs: 50 },
      );
      if (two) throw new Error(`two leaders at once: ${two.join(', ')}`);
      return { leader: leader as string, ms };
    };
    const quota = (name: string) => ({
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'QuotaPolicy',
      metadata: { name, namespace: 'le' },
      spec: {
        mode: 'Enforce',
        failureMode: 'Closed',
        subject: [{ type: 'User' }],
        defaultTier: 'free',
        tiers: [{ name: 'free', limits: [{ requests: 1, window: '1h' }] }],
      },
    });
    const readyReason = async (name: string) => {
      const r = await kubeRequest(kc, 'GET', `/apis/nox.dev/v1alpha1/namespaces/le/quotapolicies/${name}`);
      const s = (r.body as { status?: { conditions?: { type: string; reason?: string }[] } }).status;
      return s?.conditions?.find((c) => c.type === 'Ready')?.reason;
    };

    it('two replicas: exactly one leads and reconciles, the other stands by (ready)', async () => {
      await Promise.all([startOperator('op-a'), startOperator('op-b')]);
      const { leader, ms } = await oneLeader(10_000);
      testLog(`first leader ${leader} elected ${ms} ms after both were ready`);
      const standby = leader === 'op-a' ? 'op-b' : 'op-a';
      const s = running.get(standby) as { port: number };
      // The standby names the leader once it has read the Lease (within a retry period).
      await waitUntil(
        'standby names the leader',
        async () => {
          const res = await fetch(`http://127.0.0.1:${s.port}/readyz`);
          const body = (await res.json()) as { reason: string };
          return res.status === 200 && body.reason === `standing by (leader: ${leader})`;
        },
        2 * LEASE.retryMs + 1000,
      );

      await serverSideApply(kc, '/apis/nox.dev/v1alpha1/namespaces/le/quotapolicies', quota('q1'));
      await waitUntil('q1 Ready', async () => (await readyReason('q1')) === 'Ready', 10_000);
      const l = running.get(leader) as { port: number };
      expect(
        await scrapedMetric(l.port, 'nox_operator_reconciles_total', { kind: 'QuotaPolicy' }),
      ).toBeGreaterThan(0);
      expect(await scrapedMetric(s.port, 'nox_operator_reconciles_total')).toBe(0);
      // Stable: over several renewals nobody else takes it. The signal: the leader has renewed
      // the Lease for a whole lease duration since this point.
      const from = Date.now();
      await waitUntil(
        'renewals over a whole lease duration',
        async () => Date.parse((await lease())?.spec?.renewTime ?? '') >= from + LEASE.durationMs,
        2 * LEASE.durationMs + 2000,
        { intervalMs: 50 },
      );
      expect(await leaders()).toEqual([leader]);
      expect((await lease())?.spec).toMatchObject({ holderIdentity: leader, leaseDurationSeconds: 3 });
    });

    it('the leader stopped (SIGTERM) releases the Lease: the other leads within the lease duration', async () => {
      const before = await lease();
      const leader = before?.spec?.holderIdentity as string;
      const t0 = Date.now();
      await running.get(leader)?.svc.stop();
      running.delete(leader);
      const next = await oneLeader(LEASE.durationMs, leader);
      const ms = Date.now() - t0;
      testLog(
        `graceful stop of ${leader} → ${next.leader} leads after ${ms} ms (lease duration ${LEASE.durationMs} ms)`,
      );
      expect(ms).toBeLessThan(LEASE.durationMs);
      expect((await lease())?.spec?.leaseTransitions).toBe((before?.spec?.leaseTransitions ?? 0) + 1);
      // The new leader reconciles.
      await serverSideApply(kc, '/apis/nox.dev/v1alpha1/namespaces/le/quotapolicies', quota('q2'));
      await waitUntil('q2 Ready', async () => (await readyReason('q2')) === 'Ready', 10_000);
    });

    it('the leader killed (SIGKILL) cannot release: another takes over once the Lease expires', async () => {
      await startOperator('op-c');
      const { leader } = await oneLeader(5000);
      // Every standby has read the Lease (and so will see its renewals stop).
      for (const [id, o] of running)
        if (id !== leader)
          await waitUntil(
            `${id} to name the leader`,
            async () =>
              ((await (await fetch(`http://127.0.0.1:${o.port}/readyz`)).json()) as { reason: string })
                .reason === `standing by (leader: ${leader})`,
            2 * LEASE.retryMs + 1000,
            { intervalMs: 50 },
          );
      const t0 = Date.now();
      await running.get(leader)?.svc.kill();
      running.delete(leader);
      const next = await oneLeader(LEASE.durationMs + 4 * LEASE.retryMs + 2000, leader);
      const ms = Date.now() - t0;
      testLog(
        `SIGKILL of ${leader} → ${next.leader} leads after ${ms} ms (lease ${LEASE.durationMs} ms, retry ${LEASE.retryMs} ms)`,
      );
      // The candidate times the lease from when it last saw it change (client-go's rule): at
      // most one retry period after the last renewal, plus one retry period to notice expiry.
      expect(ms).toBeGreaterThanOrEqual(LEASE.durationMs - LEASE.retryMs);
      expect(ms).toBeLessThan(LEASE.durationMs + 3 * LEASE.retryMs);
      await serverSideApply(kc, '/apis/nox.dev/v1alpha1/namespaces/le/quotapolicies', quota('q3'));
      await waitUntil('q3 Ready', async () => (await readyReason('q3')) === 'Ready', 10_000);
    });
  });

  describe('controller semantics (in-process, a test reconciler on ConfigMaps)', () => {
    let manager: Manager;
    let registry: Registry;
    const ns = 'rt';
    const calls: { key: string; start: number; end: number; data?: Record<string, string> }[] = [];
    const inFlight = new Map<string, number>();
    let maxConcurrentPerKey = 0;
    let maxConcurrent = 0;
    const behaviour = new Map<string, (attempt: number) => ReconcileResult | 'throw'>();
    const attempts = new Map<string, number>();

    const cmPath = `/api/v1/namespaces/${ns}/configmaps`;
    const applyCm = async (
      name: string,
      data: Record<string, string>,
      extra: Record<string, unknown> = {},
    ) => {
      const r = await serverSideApply(kc, cmPath, {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name, namespace: ns, ...extra },
        data,
      });
      if (r.status !== 200 && r.status !== 201)
        throw new Error(`apply ${name}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body as KubeObject;
    };
    const callsOf = (name: string) => calls.filter((c) => c.key === `${ns}/${name}`);
    const queueIdle = () => {
      const q = manager.controllers[0]?.queue;
      return q !== undefined && q.length === 0 && q.processing === 0 && q.delayed === 0;
    };

    beforeAll(async () => {
      registry = new Registry();
      manager = new Manager({
        kubeConfig: kc,
        log,
        registry,
        namespaces: [ns],
        leaderElection: false,
        watchBackoff: { initialMs: 100, maxMs: 1000 },
      });
      const informer = manager.cache.informer(configMaps);
      const reconciler: Reconciler = {
        kind: 'ConfigMap',
        async reconcile(key: ObjectKey): Promise<ReconcileResult> {
          const k = `${key.namespace}/${key.name}`;
          const n = (inFlight.get(k) ?? 0) + 1;
          inFlight.set(k, n);
          maxConcurrentPerKey = Math.max(maxConcurrentPerKey, n);
          maxConcurrent = Math.max(
            maxConcurrent,
            [...inFlight.values()].reduce((a, b) => a + b, 0),
          );
          const startAt = Date.now();
          const attempt = (attempts.get(k) ?? 0) + 1;
          attempts.set(k, attempt);
          try {
            const obj = informer.get(key) as (KubeObject & { data?: Record<string, string> }) | undefined;
            const b = behaviour.get(key.name);
            await sleep(key.name.startsWith('slow') ? 150 : 5);
            const data = obj?.data;
            calls.push({ key: k, start: startAt, end: Date.now(), ...(data ? { data } : {}) });
            const outcome = b ? b(attempt) : { kind: 'done' as const };
            if (outcome === 'throw') throw new Error(`attempt ${attempt} of ${k} fails on purpose`);
            return outcome;
          } finally {
            inFlight.set(k, (inFlight.get(k) ?? 1) - 1);
          }
        },
      };
      manager.add(
        new Controller({
          for: configMaps,
          reconciler,
          owns: [secrets],
          concurrency: 4,
          // Long: a resync would add reconciles the timing tests do not expect (see the resync test).
          resyncMs: 600_000,
          rateLimit: { baseDelayMs: 100, maxDelayMs: 5000 },
        }),
      );
      await manager.start();
      await waitUntil('controller running', async () => manager.reconciling, 20_000);
    });
    afterAll(async () => {
      await manager?.stop();
    });

    it('reconciles one object at a time, coalesces a burst of changes, and the last reconcile sees the last state', async () => {
      await applyCm('slow-burst', { v: '0' });
      await waitUntil('first reconcile', async () => callsOf('slow-burst').length > 0, 5000);
      for (let i = 1; i <= 20; i++) await applyCm('slow-burst', { v: String(i) });
      await waitUntil(
        'reconciled at v=20',
        async () => callsOf('slow-burst').at(-1)?.data?.v === '20',
        10_000,
      );
      // Nothing more to come: nothing queued, delayed or in progress.
      await waitUntil('the work queue to be idle', queueIdle, 5000, { intervalMs: 20 });
      const mine = callsOf('slow-burst');
      testLog(
        `21 changes → ${mine.length} reconciles of 150 ms each (max concurrent per key ${maxConcurrentPerKey}, overall ${maxConcurrent})`,
      );
      expect(maxConcurrentPerKey).toBe(1);
      expect(mine.length).toBeLessThan(21);
      expect(mine.at(-1)?.data?.v).toBe('20');
      for (let i = 1; i < mine.length; i++) {
        expect((mine[i] as { start: number }).start).toBeGreaterThanOrEqual(
          (mine[i - 1] as { end: number }).end,
        );
      }
    });

    it('reconciles different objects concurrently', async () => {
      const before = maxConcurrent;
      await Promise.all([1, 2, 3, 4].map((i) => applyCm(`slow-par-${i}`, { v: '1' })));
      await waitUntil(
        'all four reconciled',
        async () => [1, 2, 3, 4].every((i) => callsOf(`slow-par-${i}`).length > 0),
        5000,
      );
      expect(Math.max(before, maxConcurrent)).toBeGreaterThan(1);
    });

    it('retries a failing object with exponential backoff, and starts from the base delay after a success', async () => {
      behaviour.set('flaky', (attempt) => (attempt <= 4 ? 'throw' : { kind: 'done' }));
      const errorsBefore = await metricSum(registry, 'nox_operator_reconciles_total', {
        kind: 'ConfigMap',
        result: 'error',
      });
      await applyCm('flaky', { v: '1' });
      await waitUntil('five attempts', async () => callsOf('flaky').length >= 5, 10_000);
      const starts = callsOf('flaky').map((c) => c.start);
      const gaps = starts.slice(1).map((s, i) => s - (starts[i] as number));
      testLog(`retry gaps after failures: ${gaps.join(', ')} ms (base 100 ms)`);
      // 100, 200, 400, 800 ms (+ the 5 ms reconcile and scheduling)
      expect(gaps[0]).toBeGreaterThanOrEqual(95);
      expect(gaps[1]).toBeGreaterThanOrEqual(195);
      expect(gaps[2]).toBeGreaterThanOrEqual(395);
      expect(gaps[3]).toBeGreaterThanOrEqual(795);
      expect(gaps[3]).toBeLessThan(1500);
      expect(
        await metricSum(registry, 'nox_operator_reconciles_total', {
          kind: 'ConfigMap',
          result: 'error',
        }),
      ).toBe(errorsBefore + 4);
      expect(manager.controllers[0]?.queue?.failures(`${ns}/flaky`)).toBe(0);

      // Fails again once: back to the base delay.
      attempts.set(`${ns}/flaky`, 3);
      behaviour.set('flaky', (attempt) => (attempt === 4 ? 'throw' : { kind: 'done' }));
      const n = callsOf('flaky').length;
      await applyCm('flaky', { v: '2' });
      await waitUntil('retried once', async () => callsOf('flaky').length >= n + 2, 5000);
      const [a = 0, b = Number.POSITIVE_INFINITY] = callsOf('flaky')
        .slice(n)
        .map((c) => c.start);
      expect(b - a).toBeLessThan(400);
    });

    it('requeue after: comes back after the given delay without any change', async () => {
      behaviour.set('poll', (attempt) =>
        attempt <= 3 ? { kind: 'requeue', afterMs: 300 } : { kind: 'done' },
      );
      await applyCm('poll', { v: '1' });
      await waitUntil('four reconciles', async () => callsOf('poll').length >= 4, 5000);
      const starts = callsOf('poll').map((c) => c.start);
      const gaps = starts.slice(1, 4).map((s, i) => s - (starts[i] as number));
      testLog(`requeue-after gaps: ${gaps.join(', ')} ms (asked 300 ms)`);
      for (const g of gaps) {
        expect(g).toBeGreaterThanOrEqual(295);
        expect(g).toBeLessThan(800);
      }
    });

    it('a terminal result is not retried', async () => {
      behaviour.set('hopeless', () => ({ kind: 'terminal', reason: 'Impossible', message: 'no' }));
      const terminal = () =>
        metricSum(registry, 'nox_operator_reconciles_total', { kind: 'ConfigMap', result: 'terminal' });
      const before = await terminal();
      await applyCm('hopeless', { v: '1' });
      // Processed (counted as terminal) and nothing scheduled: no retry can come without a change.
      await waitUntil('reconciled', async () => (await terminal()) === before + 1 && queueIdle(), 5000, {
        intervalMs: 20,
      });
      expect(callsOf('hopeless')).toHaveLength(1);
      expect(manager.controllers[0]?.queue?.failures(`${ns}/hopeless`)).toBe(0);
    });

    it('a change or deletion of an owned child wakes its owner', async () => {
      const owner = await applyCm('owner', { v: '1' });
      await waitUntil('owner reconciled', async () => callsOf('owner').length >= 1, 5000);
      const n = callsOf('owner').length;
      const ref = {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        name: 'owner',
        uid: owner.metadata.uid,
        controller: true,
      };
      const r = await serverSideApply(kc, `/api/v1/namespaces/${ns}/secrets`, {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'owned-child', namespace: ns, ownerReferences: [ref] },
        stringData: { a: 'b' },
      });
      expect(r.status).toBe(201);
      await waitUntil('owner woken by child creation', async () => callsOf('owner').length > n, 5000);
      const m = callsOf('owner').length;
      await kubeRequest(kc, 'DELETE', `/api/v1/namespaces/${ns}/secrets/owned-child`);
      await waitUntil('owner woken by child deletion', async () => callsOf('owner').length > m, 5000);
    });

    it('resyncs every object periodically even when nothing changes', async () => {
      await createNamespace(kc, 'rt-resync');
      await serverSideApply(kc, '/api/v1/namespaces/rt-resync/configmaps', {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: 'resync-me', namespace: 'rt-resync' },
        data: { v: '1' },
      });
      const seen: number[] = [];
      const m = new Manager({
        kubeConfig: kc,
        log,
        registry: new Registry(),
        namespaces: ['rt-resync'],
        leaderElection: false,
      });
      m.add(
        new Controller({
          for: configMaps,
          reconciler: {
            kind: 'ConfigMap',
            reconcile: async (key) => {
              if (key.name === 'resync-me') seen.push(Date.now());
              return { kind: 'done' };
            },
          },
          resyncMs: 500,
        }),
      );
      await m.start();
      try {
        await waitUntil('three reconciles of an unchanged object', async () => seen.length >= 3, 5000);
        const gaps = seen.slice(1, 3).map((t, i) => t - (seen[i] as number));
        for (const g of gaps) expect(g).toBeGreaterThanOrEqual(450);
      } finally {
        await m.stop();
      }
    });

    it('a child deleted while the API server was away (history compacted) is noticed by the relist', async () => {
      const owner = await applyCm('relist-owner', { v: '1' });
      const ref = {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        name: 'relist-owner',
        uid: owner.metadata.uid,
        controller: true,
      };
      await serverSideApply(kc, `/api/v1/namespaces/${ns}/secrets`, {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'relist-child', namespace: ns, ownerReferences: [ref] },
        stringData: { a: 'b' },
      });
      const children = manager.cache.informer(secrets);
      await waitUntil(
        'child cached',
        async () => children.get({ namespace: ns, name: 'relist-child' }) !== undefined,
        5000,
      );
      const n = callsOf('relist-owner').length;
      const t0 = Date.now();
      await kube.restartApiServer(async () => {
        expect(await apiServerRefuses(kube)).toBe(true);
        const del = await etcdRequest(kube, 'kv/deleterange', {
          key: base64(`/registry/secrets/${ns}/relist-child`),
        });
        await etcdRequest(kube, 'kv/compaction', {
          revision: (del.header as { revision: string }).revision,
          physical: true,
        });
      });
      await waitUntil(
        'child gone from the cache',
        async () => children.get({ namespace: ns, name: 'relist-child' }) === undefined,
        30_000,
      );
      await waitUntil('owner woken', async () => callsOf('relist-owner').length > n, 5000);
      testLog(`deletion during the outage seen ${Date.now() - t0} ms after the restart began`);
      expect(
        await metricSum(registry, 'nox_operator_watch_restarts_total', { resource: 'secrets' }),
      ).toBeGreaterThan(0);
      await waitUntil('watches healthy', async () => manager.cache.healthy, 20_000);
    });
  });

  describe('server-side apply', () => {
    let manager: Manager;
    beforeAll(async () => {
      manager = new Manager({ kubeConfig: kc, log, registry: new Registry(), leaderElection: false });
    });

    it('applies under the field manager nox-operator, keeps fields other managers own, and applies status', async () => {
      const cm = {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: {
          name: 'ssa',
          namespace: 'rt',
          labels: { 'app.kubernetes.io/managed-by': 'nox-operator' },
        },
        data: { mine: '1' },
      };
      const created = (await manager.applier.apply(cm)) as KubeObject;
      expect(created.metadata.uid).toBeTruthy();
      // Someone else adds a field; our next apply leaves it alone.
      await serverSideApply(
        kc,
        '/api/v1/namespaces/rt/configmaps',
        {
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: { name: 'ssa', namespace: 'rt' },
          data: { theirs: 'x' },
        },
        'someone-else',
      );
      const again = (await manager.applier.apply({ ...cm, data: { mine: '2' } })) as typeof cm & {
        metadata: { managedFields?: { manager: string; operation: string }[] };
      };
      expect(again.data).toEqual({ mine: '2', theirs: 'x' });
      expect(again.metadata.managedFields?.map((f) => `${f.manager}/${f.operation}`).sort()).toEqual([
        'nox-operator/Apply',
        'someone-else/Apply',
      ]);

      await serverSideApply(kc, '/apis/nox.dev/v1alpha1/namespaces/rt/quotapolicies', {
        apiVersion: 'nox.dev/v1alpha1',
        kind: 'QuotaPolicy',
        metadata: { name: 'ssa-status', namespace: 'rt' },
        spec: {
          mode: 'Enforce',
          failureMode: 'Closed',
          subject: [{ type: 'User' }],
          defaultTier: 'free',
          tiers: [{ name: 'free', limits: [{ requests: 1, window: '1h' }] }],
        },
      });
      await manager.applier.applyStatus({
        apiVersion: 'nox.dev/v1alpha1',
        kind: 'QuotaPolicy',
        metadata: { name: 'ssa-status', namespace: 'rt' },
        status: {
          observedGeneration: 1,
          conditions: [
            {
              type: 'Ready',
              status: 'True',
              reason: 'Ready',
              message: 'ok',
              lastTransitionTime: '2026-01-01T00:00:00Z',
            },
          ],
        },
      });
      const got = (
        await kubeRequest(kc, 'GET', '/apis/nox.dev/v1alpha1/namespaces/rt/quotapolicies/ssa-status')
      ).body as {
        status: { observedGeneration: number };
        metadata: { managedFields: { manager: string; subresource?: string }[] };
      };
      expect(got.status.observedGeneration).toBe(1);
      expect(
        got.metadata.managedFields.some((f) => f.manager === 'nox-operator' && f.subresource === 'status'),
      ).toBe(true);

      await manager.applier.delete('v1', 'ConfigMap', { namespace: 'rt', name: 'ssa' });
      await manager.applier.delete('v1', 'ConfigMap', { namespace: 'rt', name: 'ssa' }); // absent is fine
      expect((await kubeRequest(kc, 'GET', '/api/v1/namespaces/rt/configmaps/ssa')).status).toBe(404);
      // A kind the operator does not know is found by discovery.
      await manager.applier.apply({
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'Role',
        metadata: { name: 'ssa-role', namespace: 'rt' },
        rules: [],
      } as never);
      expect(
        (await kubeRequest(kc, 'GET', '/apis/rbac.authorization.k8s.io/v1/namespaces/rt/roles/ssa-role'))
          .status,
      ).toBe(200);
    });
  });
});
