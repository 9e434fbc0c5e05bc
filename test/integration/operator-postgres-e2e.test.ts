import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../../common/resources/types.gen.js';
import type { Kube } from '../harness/kube.js';
import { kubeRequest, waitForObject } from '../harness/kubeHttp.js';
import { createNoxObject, type Kubelet } from '../harness/kubelet.js';
import type { KubeProxy } from '../harness/kubeProxy.js';
import { testLog } from '../harness/log.js';
import type { RunningOperator } from '../harness/operator.js';
import {
  condition,
  healthyWith,
  newPrimary,
  pgClusterView,
  startPostgresClusterUnderTest,
} from '../harness/pgCluster.js';
import { connectPg, startWriters } from '../harness/pgHistory.js';
import { sleep, waitUntil } from '../harness/process.js';
import { scrapedMetric } from '../harness/registry.js';

/**
 * The built nox-operator runs a 3-instance PostgresCluster (quorum synchronous replication,
 * 2 s failover delay) on a real kube-apiserver + controller-manager, with the kubelet stand-in
 * running real PostgreSQL per pod and the kube-proxy stand-in routing ClusterIPs to ready
 * endpoints. Clients reach the primary only as an application would: through the -rw Service.
 */

const NS = 'pg-e2e';
const NAME = 'db';
const FAILOVER_RUNS = 5;
const clusterPath = `/apis/nox.dev/v1alpha1/namespaces/${NS}/postgresclusters/${NAME}`;
const children = [
  `/api/v1/namespaces/${NS}/secrets/${NAME}-superuser`,
  `/api/v1/namespaces/${NS}/secrets/${NAME}-app`,
  `/api/v1/namespaces/${NS}/configmaps/${NAME}-config`,
  `/api/v1/namespaces/${NS}/services/${NAME}-instances`,
  `/api/v1/namespaces/${NS}/services/${NAME}-rw`,
  `/api/v1/namespaces/${NS}/services/${NAME}-ro`,
  `/apis/apps/v1/namespaces/${NS}/statefulsets/${NAME}`,
  `/apis/policy/v1/namespaces/${NS}/poddisruptionbudgets/${NAME}`,
];

const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);

describe('nox-operator (built) runs PostgresClusters end to end', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let kubelet: Kubelet;
  let proxy: KubeProxy;
  let op: RunningOperator;

  const view = () => pgClusterView(kc, NS, NAME, () => op.service);
  const get = <T>(path: string) => view().get<T>(path);
  const cluster = async () => get<PostgresCluster>(clusterPath);
  const cond = condition;
  const healthy = healthyWith(2);
  const waitStatus = (what: string, ok: (c: PostgresCluster | undefined) => boolean, timeoutMs: number) =>
    view().waitStatus(what, ok, timeoutMs);
  const secret = (name: string, key: string) => view().secret(name, key);
  const clusterIP = (service: string) => view().clusterIP(service);
  const podIP = (pod: string) => view().podIP(pod);

  /** The application's connection (harness/pgCluster.ts appConnection). */
  const appClient = async (name = NAME) => connectPg(await view().appConnection(name));
  /** Rows of one write run, read through -rw as the application. */
  const rowsOfRun = async (run: number) => {
    const app = await appClient();
    try {
      return Number((await app.query('SELECT count(*) AS n FROM writes WHERE run = $1', [run])).rows[0].n);
    } finally {
      await app.end();
    }
  };
  /** A JSON merge patch of the cluster's spec, as `kubectl patch --type merge` sends. */
  const patchSpec = async (spec: Record<string, unknown>) => {
    const r = await kubeRequest(kc, 'PATCH', clusterPath, {
      body: JSON.stringify({ spec }),
      contentType: 'application/merge-patch+json',
    });
    expect(r.status).toBe(200);
  };
  /** A superuser query straight to one instance's pod IP. */
  const onInstance = async <T>(pod: string, sql: string, database = 'postgres'): Promise<T[]> => {
    const ip = await podIP(pod);
    if (!ip) throw new Error(`${pod} has no IP`);
    const c = await connectPg({
      host: ip,
      user: 'postgres',
      password: await secret(`${pod.replace(/-\d+$/, '')}-superuser`, 'password'),
      database,
    });
    try {
      return (await c.query(sql)).rows as T[];
    } finally {
      await c.end().catch(() => {});
    }
  };
  /** Which instances answer as primaries right now (unreachable ones do not count). */
  const primariesNow = async (): Promise<string[]> => {
    const out: string[] = [];
    await Promise.all(
      [0, 1, 2].map(async (i) => {
        const pod = `${NAME}-${i}`;
        const rows = await onInstance<{ r: boolean }>(pod, 'SELECT pg_is_in_recovery() AS r').catch(() => []);
        if (rows[0] && rows[0].r === false) out.push(pod);
      }),
    );
    return out.sort();
  };

  /** Four writers inserting (run, seq) rows through -rw as the application (harness/pgHistory.ts). */
  const writeLoad = (run: number) => startWriters(() => view().appConnection(), 'writes', run);

  /** Samples every 100 ms that at most one instance answers as primary. */
  const splitBrainWatch = () => {
    let stop = false;
    let worst: string[] = [];
    let samples = 0;
    const done = (async () => {
      while (!stop) {
        const p = await primariesNow();
        samples++;
        if (p.length > worst.length) worst = p;
        await sleep(100); // the sampling period
      }
    })();
    return {
      stop: async () => {
        stop = true;
        await done;
        return { worst, samples };
      },
    };
  };

  beforeAll(async () => {
    ({ kube, kc, kubelet, proxy, op } = await startPostgresClusterUnderTest(NS, NAME, 'nox-operator-pg-e2e'));
  }, 120_000);

  afterAll(async () => {
    await op?.service.stop();
    await proxy?.stop();
    await kubelet?.stopAll();
    await kube?.stop();
  });

  it('yields a primary and two streaming replicas, with -rw and -ro routing by role', async () => {
    const t0 = Date.now();
    const c = await waitStatus('PostgresCluster Ready', healthy, 180_000);
    testLog(
      `PostgresCluster Ready ${Date.now() - t0} ms after creation; primary ${c.status?.currentPrimary}`,
    );
    expect(c.status?.currentPrimary).toBe(`${NAME}-0`);
    expect(c.status?.instances?.map((i) => i.role)).toEqual(['primary', 'replica', 'replica']);
    for (const path of children) {
      const o = await get<KubernetesObject>(path);
      expect(o?.metadata?.ownerReferences?.[0]?.uid, path).toBe(c.metadata.uid);
    }
    const standbys = await onInstance<{ application_name: string; state: string; sync_state: string }>(
      `${NAME}-0`,
      'SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY application_name',
    );
    expect(standbys).toEqual([
      { application_name: `${NAME}-1`, state: 'streaming', sync_state: 'quorum' },
      { application_name: `${NAME}-2`, state: 'streaming', sync_state: 'quorum' },
    ]);
    const app = await appClient();
    try {
      await app.query('CREATE TABLE writes (run int NOT NULL, seq int NOT NULL, PRIMARY KEY (run, seq))');
      expect((await app.query('SELECT pg_is_in_recovery() AS r')).rows[0].r).toBe(false);
    } finally {
      await app.end();
    }
    // -ro: a replica, read-only.
    const ro = new pg.Client({
      host: await clusterIP(`${NAME}-ro`),
      port: 5432,
      user: 'postgres',
      password: await secret(`${NAME}-superuser`, 'password'),
      database: 'postgres',
      connectionTimeoutMillis: 2000,
    });
    await ro.connect();
    try {
      expect((await ro.query('SELECT pg_is_in_recovery() AS r')).rows[0].r).toBe(true);
    } finally {
      await ro.end();
    }
  }, 240_000);

  it(`fails over under write load: writes through -rw again within 10 s, nothing acknowledged lost, one primary (${FAILOVER_RUNS} runs)`, async () => {
    const times: number[] = [];
    for (let run = 1; run <= FAILOVER_RUNS; run++) {
      const before = await waitStatus(`healthy before run ${run}`, healthy, 180_000);
      const old = before.status!.currentPrimary!;
      const load = writeLoad(run);
      const watch = splitBrainWatch();
      await waitUntil('writes flowing', async () => load.acked.length > 20, 30_000);
      // The primary's container is killed and held down, as a lost node would be. A commit it
      // acknowledged while being killed (that takes some 100 ms) is not a write through the
      // new primary: the first acknowledgement from another address is.
      const oldIP = await podIP(old);
      const killedAt = Date.now();
      await kubelet.stop(`${NS}/${old}`);
      const byNew = () => load.ackTimes.filter((t, i) => t > killedAt && load.servers[i] !== oldIP);
      await waitUntil(
        'a write acknowledged after the kill',
        async () => byNew().length > 0,
        60_000,
        op.service,
      );
      const firstAck = Math.min(...byNew());
      times.push(firstAck - killedAt);
      // Writes keep being acknowledged on the new primary for a while before the load stops.
      await waitUntil(
        'writes flowing on the new primary',
        async () => load.ackTimes.filter((t) => t > firstAck).length >= 20,
        30_000,
        op.service,
      );
      await load.stop();
      const after = await waitStatus(`new primary recorded in run ${run}`, newPrimary(old), 30_000);
      const promoted = after.status!.currentPrimary!;
      // Every acknowledged row is on the new primary.
      const rows = await onInstance<{ seq: number }>(
        promoted,
        `SELECT seq FROM writes WHERE run = ${run}`,
        'nox',
      );
      const present = new Set(rows.map((r) => r.seq));
      const lost = load.acked.filter((s) => !present.has(s));
      expect(lost, `acknowledged rows missing after failover run ${run}`).toEqual([]);
      // The old primary comes back: fenced, then a replica (pg_rewind), never a second primary.
      await kubelet.resume(`${NS}/${old}`);
      await waitStatus(`healthy after run ${run}`, healthy, 180_000);
      const brain = await watch.stop();
      expect(
        brain.worst.length,
        `instances answering as primary at once: ${brain.worst.join(', ')}`,
      ).toBeLessThanOrEqual(1);
      expect(await primariesNow()).toEqual([promoted]);
      expect((await onInstance<{ r: boolean }>(old, 'SELECT pg_is_in_recovery() AS r'))[0]!.r).toBe(true);
      testLog(
        `failover run ${run}: ${old} stopped → write acknowledged through -rw after ${firstAck - killedAt} ms; promoted ${promoted}; ${load.acked.length} acknowledged rows all present; ${brain.samples} split-brain samples`,
      );
      expect(after.status?.lastFailover?.from).toBe(old);
      expect(after.status?.lastFailover?.to).toBe(promoted);
    }
    const s = sorted(times);
    testLog(
      `PG_FAILOVER_MS min=${s[0]} median=${s[Math.floor(s.length / 2)]} max=${s.at(-1)} runs=${s.length} all=${times.join(',')}`,
    );
    for (const t of times) expect(t).toBeLessThanOrEqual(10_000);
    const metrics = await (await fetch(`http://127.0.0.1:${op.httpPort}/metrics`)).text();
    const series = (name: string, labels: string) =>
      new RegExp(`^${name}\\{${labels}[^}]*\\} (\\S+)$`, 'm').exec(metrics)?.[1];
    expect(
      series('nox_postgres_failovers_total', `namespace="${NS}",cluster="${NAME}",kind="failover"`),
    ).toBe(String(FAILOVER_RUNS));
    expect(series('nox_postgres_primary_healthy', `namespace="${NS}",cluster="${NAME}"`)).toBe('1');
  }, 1_200_000);

  it('promotes the more advanced replica when the other one’s WAL receiver is paused', async () => {
    const before = await waitStatus('healthy before the paused-receiver run', healthy, 180_000);
    const old = before.status!.currentPrimary!;
    const replicas = before.status!.instances!.filter((i) => i.pod !== old).map((i) => i.pod!);
    const [paused, advanced] = replicas as [string, string];
    const [{ pid }] = (await onInstance<{ pid: number }>(paused, 'SELECT pid FROM pg_stat_wal_receiver')) as [
      { pid: number },
    ];
    process.kill(pid, 'SIGSTOP');
    try {
      // Commits go on (the other replica confirms them) and the paused one falls behind.
      const app = await appClient();
      try {
        for (let i = 1; i <= 200; i++) await app.query('INSERT INTO writes (run, seq) VALUES (100, $1)', [i]);
      } finally {
        await app.end();
      }
      const lsn = async (pod: string) =>
        (await onInstance<{ l: string }>(pod, 'SELECT pg_last_wal_receive_lsn()::text AS l'))[0]!.l;
      testLog(
        `before the kill: ${paused} received ${await lsn(paused)}, ${advanced} received ${await lsn(advanced)}`,
      );
      await kubelet.stop(`${NS}/${old}`);
      const after = await waitStatus('a new primary', newPrimary(old), 60_000);
      expect(after.status!.currentPrimary).toBe(advanced);
      const rows = await onInstance<{ n: string }>(
        advanced,
        'SELECT count(*) AS n FROM writes WHERE run = 100',
        'nox',
      );
      expect(Number(rows[0]!.n)).toBe(200);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await kubelet.resume(`${NS}/${old}`);
    await waitStatus('healthy after the paused-receiver run', healthy, 180_000);
    expect(await primariesNow()).toEqual([advanced]);
  }, 400_000);

  it('switches over on request: the old primary is shut down cleanly and follows the new one', async () => {
    const before = await waitStatus('healthy before the switchover', healthy, 180_000);
    const old = before.status!.currentPrimary!;
    const target = before.status!.instances!.find((i) => i.pod !== old)!.pod!;
    const app = await appClient();
    try {
      await app.query('INSERT INTO writes (run, seq) VALUES (200, 1)');
    } finally {
      await app.end();
    }
    const t0 = Date.now();
    const patch = (switchoverTo: string | null) => patchSpec({ switchoverTo });
    const watch = splitBrainWatch();
    await patch(target);
    const after = await waitStatus(
      'switched over and healthy',
      (c) => c?.status?.currentPrimary === target && healthy(c),
      120_000,
    );
    testLog(`switchover ${old} → ${target}: healthy after ${Date.now() - t0} ms`);
    expect(after.status?.lastFailover).toMatchObject({ from: old, to: target });
    expect((await watch.stop()).worst.length).toBeLessThanOrEqual(1);
    expect(await primariesNow()).toEqual([target]);
    expect((await onInstance<{ r: boolean }>(old, 'SELECT pg_is_in_recovery() AS r'))[0]!.r).toBe(true);
    const rows = await onInstance<{ n: string }>(
      target,
      'SELECT count(*) AS n FROM writes WHERE run = 200',
      'nox',
    );
    expect(Number(rows[0]!.n)).toBe(1);
    await patch(null);
  }, 240_000);

  it('a primary whose data is gone (emptyDir, pod deleted) is replaced by failover, never by an empty database', async () => {
    const eph = 'eph';
    const path = `/apis/nox.dev/v1alpha1/namespaces/${NS}/postgresclusters/${eph}`;
    await createNoxObject(kc, 'postgresclusters', {
      kind: 'PostgresCluster',
      metadata: { name: eph, namespace: NS },
      spec: { instances: 2, failover: { delay: '2s' } },
    });
    const ready = (c: PostgresCluster | undefined) =>
      cond(c, 'Ready')?.status === 'True' &&
      (c?.status?.instances ?? []).filter((i) => i.role === 'replica' && i.ready).length === 1;
    const before = await waitForObject<PostgresCluster>(kc, path, 'eph Ready', ready, 120_000, op.service);
    const old = before.status!.currentPrimary!;
    const app = await appClient(eph);
    try {
      await app.query('CREATE TABLE kept (v text)');
      await app.query("INSERT INTO kept VALUES ('written before the loss')");
    } finally {
      await app.end();
    }
    // The pod goes and comes back empty (emptyDir): it must not initialise a new database.
    expect((await kubeRequest(kc, 'DELETE', `/api/v1/namespaces/${NS}/pods/${old}`)).status).toBe(200);
    const after = await waitForObject<PostgresCluster>(
      kc,
      path,
      'eph failed over and Ready again',
      (c) => c?.status?.currentPrimary !== old && ready(c),
      120_000,
      op.service,
    );
    expect(after.status?.lastFailover?.from).toBe(old);
    const app2 = await appClient(eph);
    try {
      expect((await app2.query('SELECT v FROM kept')).rows).toEqual([{ v: 'written before the loss' }]);
    } finally {
      await app2.end();
    }
    // The recreated instance cloned the new primary: a replica holding the same row.
    expect((await onInstance<{ r: boolean }>(old, 'SELECT pg_is_in_recovery() AS r'))[0]!.r).toBe(true);
    expect(await onInstance<{ v: string }>(old, 'SELECT v FROM kept', 'nox')).toEqual([
      { v: 'written before the loss' },
    ]);
    expect((await kubeRequest(kc, 'DELETE', path)).status).toBe(200);
  }, 300_000);

  it('refuses an impossible spec at the API server, naming the field, and creates nothing for it', async () => {
    // The CRD's rules refuse what the operator would (max_wal_senders below what 3 instances
    // need), so the object never exists for the operator to report on.
    const bad = 'bad';
    const r = await kubeRequest(kc, 'POST', `/apis/nox.dev/v1alpha1/namespaces/${NS}/postgresclusters`, {
      body: JSON.stringify({
        apiVersion: 'nox.dev/v1alpha1',
        kind: 'PostgresCluster',
        metadata: { name: bad, namespace: NS },
        spec: { instances: 3, parameters: { max_wal_senders: '1' } },
      }),
    });
    expect(r.status).toBe(422);
    expect(JSON.stringify(r.body)).toContain('spec.parameters[max_wal_senders]');
    expect(await get(`/apis/nox.dev/v1alpha1/namespaces/${NS}/postgresclusters/${bad}`)).toBeUndefined();
    expect(await get(`/apis/apps/v1/namespaces/${NS}/statefulsets/${bad}`)).toBeUndefined();
  }, 60_000);

  it('repairs a deleted -rw Service and a deleted StatefulSet', async () => {
    const c = (await cluster())!;
    for (const path of [
      `/api/v1/namespaces/${NS}/services/${NAME}-rw`,
      `/apis/apps/v1/namespaces/${NS}/statefulsets/${NAME}`,
    ]) {
      const before = (await get<KubernetesObject>(path))!;
      const t0 = Date.now();
      // The StatefulSet is deleted leaving its pods (orphan): the recreated one adopts them.
      const query = path.includes('statefulsets') ? '?propagationPolicy=Orphan' : '';
      expect((await kubeRequest(kc, 'DELETE', `${path}${query}`)).status).toBe(200);
      await waitUntil(
        `${path} recreated`,
        async () => {
          const o = await get<KubernetesObject>(path);
          return o !== undefined && o.metadata?.uid !== before.metadata?.uid;
        },
        30_000,
        op.service,
      );
      expect((await get<KubernetesObject>(path))!.metadata?.ownerReferences?.[0]?.uid).toBe(c.metadata.uid);
      testLog(`${path} deleted: recreated after ${Date.now() - t0} ms`);
    }
    await waitStatus('Ready after the repairs', healthy, 120_000);
    // The new -rw ClusterIP routes to the primary, with the data written before.
    expect(await rowsOfRun(100)).toBe(200);
  }, 240_000);

  it('applies a changed spec.parameters to the running instances (reload, no restart)', async () => {
    const before = await waitStatus('healthy before the parameter change', healthy, 120_000);
    await patchSpec({ parameters: { work_mem: '8MB' } });
    for (const i of before.status!.instances!)
      await waitUntil(
        `work_mem = 8MB on ${i.pod}`,
        async () => (await onInstance<{ work_mem: string }>(i.pod!, 'SHOW work_mem'))[0]?.work_mem === '8MB',
        30_000,
        op.service,
      );
    // A reload, not a restart: the primary stayed the primary and nothing failed over.
    const after = await waitStatus('still healthy', healthy, 30_000);
    expect(after.status?.currentPrimary).toBe(before.status?.currentPrimary);
    expect(after.status?.lastFailover).toEqual(before.status?.lastFailover);
  }, 120_000);

  it('rolls out a setting that needs a restart: replicas one by one, then a switchover', async () => {
    const before = await waitStatus('healthy before the restart-only change', healthy, 120_000);
    const watch = splitBrainWatch();
    const t0 = Date.now();
    await patchSpec({ parameters: { work_mem: '8MB', max_connections: '150' } });
    const after = await waitStatus(
      'every instance restarted with max_connections=150, Ready',
      (c) =>
        healthy(c) &&
        c?.status?.currentPrimary !== before.status?.currentPrimary &&
        (c?.status?.instances ?? []).every((i) => !i.pendingRestart),
      180_000,
    );
    testLog(
      `restart-only setting rolled out in ${Date.now() - t0} ms; primary ${before.status?.currentPrimary} → ${after.status?.currentPrimary}`,
    );
    for (const i of after.status!.instances!)
      expect(
        (await onInstance<{ max_connections: string }>(i.pod!, 'SHOW max_connections'))[0]?.max_connections,
      ).toBe('150');
    expect(after.status?.lastFailover?.reason).toContain('need a restart');
    expect((await watch.stop()).worst.length).toBeLessThanOrEqual(1);
    expect(await rowsOfRun(100)).toBe(200);
  }, 240_000);

  it('scales down to 2 instances only once the primary is not among the removed: blocked, switch over, then shrink', async () => {
    const primaryIs = (pod: string) => (c: PostgresCluster | undefined) =>
      c?.status?.currentPrimary === pod && cond(c, 'Ready')?.status === 'True';
    // The primary on the highest instance, the one a scale-down removes.
    const before = await waitStatus('healthy before the scale-down', healthy, 120_000);
    if (before.status?.currentPrimary !== `${NAME}-2`) {
      await patchSpec({ switchoverTo: `${NAME}-2` });
      await waitStatus(`${NAME}-2 primary`, (c) => primaryIs(`${NAME}-2`)(c) && healthy(c), 120_000);
    }
    await patchSpec({ switchoverTo: null, instances: 2 });
    const blocked = await waitStatus(
      'ScaleDownBlocked',
      (c) =>
        c?.status?.observedGeneration === c?.metadata.generation &&
        cond(c, 'Ready')?.reason === 'ScaleDownBlocked',
      30_000,
    );
    expect(cond(blocked, 'Ready')?.message).toContain(`${NAME}-2 would be removed`);
    // Later reconciles keep refusing: nudge one (an annotation: no new generation) and wait
    // until the operator has counted it before looking at the StatefulSet.
    const reconciles = () =>
      scrapedMetric(op.httpPort, 'nox_operator_reconciles_total', { kind: 'PostgresCluster' });
    const counted = await reconciles();
    const nudged = await kubeRequest(kc, 'PATCH', clusterPath, {
      body: JSON.stringify({ metadata: { annotations: { 'test.nox.dev/nudge': String(Date.now()) } } }),
      contentType: 'application/merge-patch+json',
    });
    expect(nudged.status).toBe(200);
    await waitUntil('a reconcile after the nudge', async () => (await reconciles()) >= counted + 1, 60_000, {
      svc: op.service,
    });
    const sts = await get<{ spec: { replicas: number } }>(
      `/apis/apps/v1/namespaces/${NS}/statefulsets/${NAME}`,
    );
    expect(sts?.spec.replicas).toBe(3);
    expect(await primariesNow()).toEqual([`${NAME}-2`]);

    // Moving the primary lets the scale-down go through.
    await patchSpec({ switchoverTo: `${NAME}-0` });
    const after = await waitStatus(
      '2 instances, primary db-0, Ready',
      (c) =>
        primaryIs(`${NAME}-0`)(c) &&
        c?.status?.observedGeneration === c?.metadata.generation &&
        c?.status?.instances?.length === 2,
      120_000,
    );
    expect(after.status?.instances?.map((i) => i.pod)).toEqual([`${NAME}-0`, `${NAME}-1`]);
    await waitUntil(
      `${NAME}-2 gone`,
      async () =>
        kubelet.pods().filter((p) => p.namespace === NS && p.name.startsWith(`${NAME}-`)).length === 2,
      60_000,
    );
    const slots = (
      await onInstance<{ s: string }>(`${NAME}-0`, 'SELECT slot_name AS s FROM pg_replication_slots')
    ).map((x) => x.s);
    expect(slots).toEqual([`nox_${NAME}_1`]);
    const app = await appClient();
    try {
      await app.query('INSERT INTO writes (run, seq) VALUES (300, 1)');
    } finally {
      await app.end();
    }
    expect(await rowsOfRun(100)).toBe(200);
    await patchSpec({ switchoverTo: null });
  }, 360_000);

  it('deleting the PostgresCluster garbage-collects its children and the kubelet stops the processes', async () => {
    expect((await kubeRequest(kc, 'DELETE', clusterPath)).status).toBe(200);
    await waitUntil(
      'children garbage-collected',
      async () => {
        for (const p of children) if ((await get(p)) !== undefined) return false;
        return true;
      },
      90_000,
    );
    await waitUntil('the kubelet to stop every pod', async () => kubelet.pods().length === 0, 90_000);
    expect(await cluster()).toBeUndefined();
    expect(op.service.exited()).toBe(false);
  }, 180_000);
});
