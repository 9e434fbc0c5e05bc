import { execFileSync } from 'node:child_process';
import type { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../../common/resources/types.gen.js';
import { compareLsn, fencedInstances } from '../../operator/postgres/failoverRules.js';
import type { Kube } from '../harness/kube.js';
import { kubeRequest } from '../harness/kubeHttp.js';
import type { Kubelet } from '../harness/kubelet.js';
import type { KubeProxy } from '../harness/kubeProxy.js';
import { testLog } from '../harness/log.js';
import { type RunningOperator, startOperator } from '../harness/operator.js';
import {
  condition,
  healthyWith,
  newPrimary,
  pgClusterView,
  startPostgresClusterUnderTest,
} from '../harness/pgCluster.js';
import {
  type ConnectTo,
  connectPg,
  longestGap,
  overlappingAcceptance,
  type SampledWrite,
  startSampler,
  startWriters,
} from '../harness/pgHistory.js';
import { waitUntil } from '../harness/process.js';
import { tool } from '../harness/tools.js';

/**
 * PostgresCluster safety when the operator merely cannot see the primary (ADR 005), checked by
 * a history checker (harness/pgHistory.ts): writers through -rw record every acknowledged
 * commit and a sampler writes to each instance's own address. Per fault: every acknowledged
 * commit is on the primary at the end, and no two instances acknowledged writes in
 * overlapping intervals.
 *
 * The built operator, a real kube-apiserver + controller-manager, the kubelet stand-in running
 * real PostgreSQL per pod and the kube-proxy stand-in. The operator connects to the instances
 * from 127.0.0.1; the checker's connections come from addresses of its own, so a firewall rule
 * on 127.0.0.1 cuts the operator alone off from an instance while the replicas (which connect
 * from their pod addresses) still reach it.
 */

const NS = 'pg-partitions';
const NAME = 'db';
const clusterPath = `/apis/nox.dev/v1alpha1/namespaces/${NS}/postgresclusters/${NAME}`;
/** Source addresses of the checker (not pod addresses: those are 127.0.<n>.<m>). */
const WRITERS_FROM = '127.1.0.1';
const SAMPLER_FROM = '127.1.0.2';
const CHAIN = `NOX-PG-TEST-${process.pid}`;

describe('PostgresCluster under partitions and stalls: no acknowledged commit lost, never two writable primaries', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let kubelet: Kubelet;
  let proxy: KubeProxy;
  let op: RunningOperator;
  let chainInstalled = false;

  const iptables = (...args: string[]) => execFileSync(tool('iptables'), ['-w', ...args], { stdio: 'pipe' });
  const view = () => pgClusterView(kc, NS, NAME, () => op.service);
  const get = <T>(path: string) => view().get<T>(path);
  const healthy = healthyWith(2);
  const waitStatus = (what: string, ok: (c: PostgresCluster | undefined) => boolean, timeoutMs: number) =>
    view().waitStatus(what, ok, timeoutMs);
  const secret = (name: string, key: string) => view().secret(name, key);
  const clusterIP = (service: string) => view().clusterIP(service);
  const podIP = (pod: string) => view().podIP(pod);
  const instances = async () =>
    (
      await Promise.all(
        [0, 1, 2].map(async (i) => ({ pod: `${NAME}-${i}`, ip: (await podIP(`${NAME}-${i}`)) ?? '' })),
      )
    ).filter((x) => x.ip);

  let app: () => Promise<ConnectTo>;
  let superuser: Omit<ConnectTo, 'host'>;
  /** A superuser query on one instance's own address (from the sampler's address). */
  const onInstance = async <T>(pod: string, sql: string, database = 'postgres'): Promise<T[]> => {
    const c = await connectPg({ ...superuser, database, host: (await podIP(pod))! });
    try {
      return (await c.query(sql)).rows as T[];
    } finally {
      await c.end().catch(() => {});
    }
  };

  beforeAll(async () => {
    ({ kube, kc, kubelet, proxy, op } = await startPostgresClusterUnderTest(
      NS,
      NAME,
      'nox-operator-pg-partitions',
    ));
    iptables('-N', CHAIN);
    iptables('-I', 'OUTPUT', '-j', CHAIN);
    chainInstalled = true;
    await waitStatus('healthy', healthy, 240_000);
    app = async () => ({ ...(await view().appConnection()), localAddress: WRITERS_FROM });
    superuser = {
      user: 'postgres',
      password: await secret(`${NAME}-superuser`, 'password'),
      database: 'postgres',
      localAddress: SAMPLER_FROM,
    };
    const a = await connectPg(await app());
    await a.query('CREATE TABLE history (run int NOT NULL, seq bigint NOT NULL, PRIMARY KEY (run, seq))');
    await a.end();
    const s = await connectPg({ ...superuser, host: await clusterIP(`${NAME}-rw`) });
    await s.query(
      'CREATE TABLE sampler (run int NOT NULL, instance text NOT NULL, seq int NOT NULL, PRIMARY KEY (run, seq))',
    );
    await s.end();
  }, 300_000);

  afterAll(async () => {
    if (chainInstalled) {
      iptables('-D', 'OUTPUT', '-j', CHAIN);
      iptables('-F', CHAIN);
      iptables('-X', CHAIN);
    }
    await op?.service.stop();
    await proxy?.stop();
    await kubelet?.stopAll();
    await kube?.stop();
  });

  /**
   * One fault under load: `inject` starts it, `heal` ends it once a new primary is recorded
   * and has acknowledged writes. Returns what the note reports.
   */
  const underFault = async (
    run: number,
    fault: string,
    /** Starts the fault; resolves to when it struck, if not at once. */
    inject: (old: string) => Promise<number | undefined>,
    heal: (old: string) => Promise<void>,
    duringFault?: (old: string, promoted: string) => Promise<void>,
    /** The fault makes the operator promote another instance (else the primary stays). */
    failsOver = true,
  ) => {
    const before = await waitStatus(`healthy before ${fault}`, healthy, 240_000);
    const old = before.status!.currentPrimary!;
    const writers = startWriters(app, 'history', run);
    const sampler = startSampler(instances, superuser, 'sampler', run);
    let healed = false;
    try {
      await waitUntil('writes flowing', async () => writers.acked.length > 20, 30_000);
      const called = Date.now();
      const faultAt = (await inject(old)) ?? called;
      const after = await waitStatus(
        failsOver ? `a new primary after ${fault}` : `the fault ${fault} applied`,
        (c) => !!c?.status?.currentPrimary && (c.status.currentPrimary !== old) === failsOver,
        90_000,
      );
      const promoted = after.status!.currentPrimary!;
      const seenAt = Date.now();
      await waitUntil(
        'writes acknowledged by the new primary',
        async () => writers.ackTimes.filter((t) => t > seenAt).length >= 20,
        60_000,
        op.service,
      );
      // Writes are available again once the new primary acknowledges a steady stream of them.
      const writable = writers.ackTimes.filter((t) => t > seenAt).sort((a, b) => a - b)[19]!;
      await duringFault?.(old, promoted);
      await heal(old);
      healed = true;
      await waitStatus(
        `healthy after ${fault}`,
        (c) => healthy(c) && c?.status?.currentPrimary === promoted,
        240_000,
      );
      await writers.stop();
      await sampler.stop();

      const rows = await onInstance<{ seq: string }>(
        promoted,
        `SELECT seq FROM history WHERE run = ${run}`,
        'nox',
      );
      const present = new Set(rows.map((r) => Number(r.seq)));
      const lost = writers.acked.filter((s) => !present.has(s));
      const sampled = new Set(
        (await onInstance<{ seq: number }>(promoted, `SELECT seq FROM sampler WHERE run = ${run}`)).map(
          (r) => r.seq,
        ),
      );
      const lostSamples = sampler.accepted.filter((w) => !sampled.has(w.seq));
      const overlaps = overlappingAcceptance(sampler.accepted);
      const byInstance = (pod: string) => sampler.accepted.filter((w) => w.instance === pod);
      const lastOld = byInstance(old).reduce((m, w) => Math.max(m, w.ackedAt), 0);
      const firstNew = byInstance(promoted).filter((w) => w.sentAt > faultAt)[0];
      const unavailableMs = longestGap(writers.ackTimes, faultAt, writable);
      testLog(
        `${fault}: ${old} → ${promoted}; acknowledged ${writers.acked.length}, found ${writers.acked.length - lost.length}; sampler accepted ${sampler.accepted.length} (${[0, 1, 2].map((i) => `${NAME}-${i}: ${byInstance(`${NAME}-${i}`).length}/${sampler.attempts.get(`${NAME}-${i}`) ?? 0}`).join(', ')}), found ${sampler.accepted.length - lostSamples.length}; writes unavailable for ${unavailableMs} ms; last write accepted by ${old} at +${lastOld - faultAt} ms, first by ${promoted} sent at +${(firstNew?.sentAt ?? 0) - faultAt} ms`,
      );
      expect(lost, `acknowledged rows missing after ${fault}`).toEqual([]);
      expect(lostSamples, `acknowledged sampler writes missing after ${fault}`).toEqual([]);
      expect(
        overlaps.map(
          ([a, b]: [SampledWrite, SampledWrite]) => `${a.instance}#${a.seq} ~ ${b.instance}#${b.seq}`,
        ),
        'writes acknowledged by two instances in overlapping intervals',
      ).toEqual([]);
      expect(firstNew, `${promoted} accepted a sampler write after the fault`).toBeDefined();
      return { old, promoted, acked: writers.acked.length, unavailableMs };
    } finally {
      if (!healed) await heal(old).catch(() => {});
      await writers.stop();
      await sampler.stop();
    }
  };

  it('the operator cut off from the primary (replicas still reach it, the fence never reaches its pod): replicas detached, one promoted, the old one acknowledges nothing more', async () => {
    let oldIP = '';
    const rule = () => ['-p', 'tcp', '-s', '127.0.0.1', '-d', oldIP, '--dport', '5432', '-j', 'DROP'];
    await underFault(
      1,
      'operator partitioned from the primary',
      async (old) => {
        oldIP = (await podIP(old))!;
        // The pod's kubelet does not see the fence either: its PostgreSQL keeps running as a primary.
        kubelet.cutMetadata(`${NS}/${old}`, true);
        iptables('-A', CHAIN, ...rule());
        return undefined;
      },
      async (old) => {
        iptables('-D', CHAIN, ...rule());
        kubelet.cutMetadata(`${NS}/${old}`, false);
      },
      async (old) => {
        // The fault was real: while the new primary took writes, the old one still ran as a
        // primary and its replicas' WAL receivers were detached from it.
        const [r] = await onInstance<{ r: boolean }>(old, 'SELECT pg_is_in_recovery() AS r');
        expect(r!.r).toBe(false);
        const [s] = await onInstance<{ n: string }>(old, 'SELECT count(*) AS n FROM pg_stat_replication');
        expect(Number(s!.n)).toBe(0);
      },
    );
  }, 600_000);

  it('the primary frozen (SIGSTOP) past the failover delay, then resumed: it acknowledges nothing after the promotion', async () => {
    await underFault(
      2,
      'primary frozen',
      async (old) => {
        kubelet.freeze(`${NS}/${old}`, true);
        return undefined;
      },
      async (old) => kubelet.freeze(`${NS}/${old}`, false),
      async (old) => {
        // Resumed while the new primary takes writes, before the fence is acted on.
        kubelet.freeze(`${NS}/${old}`, false);
      },
    );
  }, 600_000);

  /** A JSON merge patch of the cluster's spec, as `kubectl patch --type merge` sends. */
  const patchSpec = async (spec: Record<string, unknown>) => {
    const r = await kubeRequest(kc, 'PATCH', clusterPath, {
      body: JSON.stringify({ spec }),
      contentType: 'application/merge-patch+json',
    });
    expect(r.status).toBe(200);
  };

  /** Starts the operator again (the one before is gone or stopped), with `failpoints` armed. */
  const restartOperator = async (name: string, failpoints?: string) => {
    if (!op.service.exited()) await op.service.stop();
    op = await startOperator(kube, {
      name,
      ...(failpoints ? { env: { NOX_FAILPOINTS: failpoints } } : {}),
    });
  };
  const operatorDiesAt = async (step: string) => {
    await waitUntil(`the operator killed at ${step}`, async () => op.service.exited(), 90_000);
    await restartOperator(`nox-operator-after-${step.replace('.', '-')}`);
  };

  it('the operator killed at each step of a failover: the next one finishes it, nothing acknowledged lost, one primary', async () => {
    let run = 10;
    for (const step of [
      'failover.fenced',
      'promotion.detached',
      'promotion.designated',
      'promotion.promoted',
    ])
      await underFault(
        run++,
        `primary killed, operator killed at ${step}`,
        async (old) => {
          await restartOperator(`nox-operator-${step.replace('.', '-')}`, step);
          const at = Date.now();
          await kubelet.stop(`${NS}/${old}`);
          await operatorDiesAt(step);
          return at;
        },
        async (old) => kubelet.resume(`${NS}/${old}`),
      );
  }, 1_200_000);

  it('the operator killed right after recording a switchover: the next one finishes it', async () => {
    await underFault(
      20,
      'switchover, operator killed at switchover.designated',
      async (old) => {
        await restartOperator('nox-operator-switchover', 'switchover.designated');
        const c = await get<PostgresCluster>(clusterPath);
        const to = c!.status!.instances!.find((i) => i.pod !== old && i.role === 'replica')!.pod!;
        const at = Date.now();
        await patchSpec({ switchoverTo: to });
        await operatorDiesAt('switchover.designated');
        return at;
      },
      async () => patchSpec({ switchoverTo: null }),
    );
  }, 600_000);

  it('synchronous.number lowered from 2 to 1 and the primary killed at once: counted by what PostgreSQL confirmed', async () => {
    await patchSpec({ synchronous: { mode: 'Quorum', number: 2 } });
    await waitStatus(
      'synchronous_standby_names ANY 2 confirmed by the primary',
      (c) => healthy(c) && /^ANY 2 /.test(c?.status?.synchronousStandbyNames ?? ''),
      60_000,
    );
    await underFault(
      30,
      'synchronous.number 2 → 1, primary killed',
      async (old) => {
        const at = Date.now();
        await patchSpec({ synchronous: { mode: 'Quorum', number: 1 } });
        await kubelet.stop(`${NS}/${old}`);
        return at;
      },
      async (old) => kubelet.resume(`${NS}/${old}`),
    );
  }, 600_000);

  it('a scale-down from 3 to 2 instances during writes, and back', async () => {
    const before = await waitStatus('healthy before the scale-down', healthy, 240_000);
    if (before.status!.currentPrimary === `${NAME}-2`) {
      // The scale-down would remove the primary: it waits for a switchover (another test).
      await patchSpec({ switchoverTo: `${NAME}-0` });
      await waitStatus(
        'switched over to db-0',
        (c) => healthy(c) && c?.status?.currentPrimary === `${NAME}-0`,
        120_000,
      );
      await patchSpec({ switchoverTo: null });
    }
    await underFault(
      40,
      'scale-down 3 → 2',
      async (primary) => {
        // While it waits, the StatefulSet's size against what the primary waits for: it may
        // shrink only once the primary runs with the names of the instances that stay.
        const shrunkUnder: string[] = [];
        let watching = true;
        const watch = (async () => {
          while (watching) {
            const sts = await get<{ spec: { replicas: number } }>(
              `/apis/apps/v1/namespaces/${NS}/statefulsets/${NAME}`,
            );
            const [row] = await onInstance<{ s: string }>(
              primary,
              "SELECT current_setting('synchronous_standby_names') AS s",
            ).catch(() => []);
            if (sts?.spec.replicas === 2 && row) shrunkUnder.push(row.s);
            await new Promise((r) => setTimeout(r, 20));
          }
        })();
        const at = Date.now();
        await patchSpec({ instances: 2 });
        try {
          await waitUntil(
            `${NAME}-2 removed`,
            async () => !(await get(`/api/v1/namespaces/${NS}/pods/${NAME}-2`)),
            120_000,
            op.service,
          );
        } finally {
          watching = false;
          await watch;
        }
        expect(shrunkUnder.length, 'samples of the shrunk StatefulSet').toBeGreaterThan(0);
        expect(new Set(shrunkUnder), 'what the primary waited for once the StatefulSet shrank').toEqual(
          new Set([`ANY 1 ("${NAME}-0", "${NAME}-1")`]),
        );
        return at;
      },
      async () => patchSpec({ instances: 3 }),
      undefined,
      false,
    );
  }, 600_000);

  /** The instances other than `primary`, by ordinal. */
  const replicasOf = async (primary: string) =>
    (await get<PostgresCluster>(clusterPath))!
      .status!.instances!.map((i) => i.pod!)
      .filter((pod) => pod !== primary)
      .sort() as [string, string];
  const fencedNow = async () =>
    fencedInstances((await get<PostgresCluster>(clusterPath))!.metadata.annotations ?? {});
  /** The operator reports, past the failover delay, that it cannot fail over: `readable` is what it can read. */
  const waitNoFailover = (readable: string) =>
    waitStatus(
      `the operator waiting for replicas (${readable || 'none'} readable) without fencing`,
      (c) =>
        condition(c, 'Ready')?.reason === 'NotEnoughReplicas' &&
        (condition(c, 'Ready')?.message ?? '').includes(
          readable ? `can be read (${readable})` : '0 of 2 replicas can be read',
        ),
      90_000,
    );

  it('a total outage, the old primary back first: it resumes as the primary, never fenced, nothing lost', async () => {
    await underFault(
      42,
      'total outage, primary back first',
      async (old) => {
        const pods = [old, ...(await replicasOf(old))];
        const at = Date.now();
        await Promise.all(pods.map((pod) => kubelet.stop(`${NS}/${pod}`)));
        await waitNoFailover('');
        expect(await fencedNow()).toEqual([]);
        await kubelet.resume(`${NS}/${old}`);
        await waitStatus(
          `${old} a ready primary again`,
          (c) =>
            c?.status?.currentPrimary === old &&
            !!c.status.instances?.some((i) => i.pod === old && i.role === 'primary' && i.ready),
          90_000,
        );
        await Promise.all(pods.slice(1).map((pod) => kubelet.resume(`${NS}/${pod}`)));
        return at;
      },
      async () => {},
      async (old) => {
        expect(await fencedNow()).toEqual([]);
        expect((await onInstance<{ r: boolean }>(old, 'SELECT pg_is_in_recovery() AS r'))[0]!.r).toBe(false);
      },
      false,
    );
  }, 600_000);

  it('a total outage, the replicas back first, the one behind first: the one holding every acknowledged commit is promoted', async () => {
    let ahead = '';
    const outcome = await underFault(
      43,
      'total outage, replicas back first',
      async (old) => {
        const [behind, other] = await replicasOf(old);
        ahead = other;
        // `behind` stops first; the primary goes on committing with `ahead` alone acknowledging.
        await kubelet.stop(`${NS}/${behind}`);
        const a = await connectPg(await app());
        await a.query('INSERT INTO history (run, seq) SELECT 49, g FROM generate_series(1, 100000) g');
        await a.end();
        testLog(`total outage: ${behind} stopped; 100 000 rows committed with ${ahead} alone acknowledging`);
        const at = Date.now();
        await Promise.all([old, ahead].map((pod) => kubelet.stop(`${NS}/${pod}`)));
        await waitNoFailover('');
        // The one behind comes back alone: promoting it would lose what only `ahead` holds.
        await kubelet.resume(`${NS}/${behind}`);
        await waitNoFailover(behind);
        expect(await fencedNow()).toEqual([]);
        await kubelet.resume(`${NS}/${ahead}`);
        return at;
      },
      async (old) => kubelet.resume(`${NS}/${old}`),
    );
    expect(outcome.promoted).toBe(ahead);
    const [{ n }] = (await onInstance<{ n: string }>(
      ahead,
      'SELECT count(*) AS n FROM history WHERE run = 49',
      'nox',
    )) as [{ n: string }];
    expect(Number(n)).toBe(100_000);
  }, 600_000);

  // Last: it leaves an instance stopped.
  it('a replica stranded on an old timeline, ahead of the others by position, is never promoted, and is rewound onto the new one', async () => {
    // Asynchronous, so that a failover may leave a replica behind that has more of the old
    // timeline than the promoted one: the case where the highest LSN is the wrong choice.
    await patchSpec({ synchronous: { mode: 'Off', number: 1 } });
    const start = await waitStatus(
      'asynchronous replication confirmed',
      (c) => healthy(c) && c?.status?.synchronousStandbyNames === '',
      60_000,
    );
    const p = start.status!.currentPrimary!;
    const timeline = start.status!.timeline!;
    const [r1, r2] = start.status!.instances!.filter((i) => i.pod !== p).map((i) => i.pod!) as [
      string,
      string,
    ];
    const lsn = async (pod: string, fn = 'pg_last_wal_receive_lsn') =>
      (await onInstance<{ l: string }>(pod, `SELECT ${fn}()::text AS l`))[0]!.l;

    // r1 falls far behind while r2 receives some 30 MB more. Both ends of r1's stream pause:
    // p's WAL sender, for a paused receiver still gets what the kernel buffers for it (up to
    // tcp_rmem's maximum, 32 MB here), and r1's WAL receiver, which would otherwise time out
    // (wal_receiver_timeout) and connect again, to a new sender.
    const [{ pid: sender }] = (await onInstance<{ pid: number }>(
      p,
      `SELECT pid FROM pg_stat_replication WHERE application_name = '${r1}'`,
    )) as [{ pid: number }];
    const [{ pid: receiver }] = (await onInstance<{ pid: number }>(
      r1,
      'SELECT pid FROM pg_stat_wal_receiver',
    )) as [{ pid: number }];
    for (const pid of [sender, receiver]) process.kill(pid, 'SIGSTOP');
    try {
      const a = await connectPg(await app());
      await a.query('INSERT INTO history (run, seq) SELECT 50, g FROM generate_series(1, 300000) g');
      await a.end();
      // Asynchronous: r2 may still be receiving; stranded ahead means it has all of it.
      const end = await lsn(p, 'pg_current_wal_lsn');
      await waitUntil(
        `${r2} received the old timeline to ${end}`,
        async () => compareLsn(await lsn(r2), end) >= 0,
        30_000,
      );
    } catch (e) {
      for (const pid of [sender, receiver]) process.kill(pid, 'SIGCONT');
      throw e;
    }
    // The operator cannot see r2 through the failover, and p dies.
    const r2IP = (await podIP(r2))!;
    const rule = ['-p', 'tcp', '-s', '127.0.0.1', '-d', r2IP, '--dport', '5432', '-j', 'DROP'];
    iptables('-A', CHAIN, ...rule);
    let ruleOn = true;
    // Nor does r2's kubelet deliver the operator's request to rewind it, until the end: it stays
    // stranded through the second failover.
    kubelet.cutMetadata(`${NS}/${r2}`, true);
    try {
      await kubelet.stop(`${NS}/${p}`); // its paused WAL sender with it
      process.kill(receiver, 'SIGCONT');
      await waitStatus(`${r1} promoted`, (c) => c?.status?.currentPrimary === r1, 90_000);
      expect((await onInstance<{ t: number }>(r1, 'SELECT 1 AS t')).length).toBe(1);

      // Commits on the new timeline, acknowledged.
      const w = await connectPg(await app());
      const timeline2: number[] = [];
      for (let i = 1; i <= 50; i++) {
        await w.query('INSERT INTO history (run, seq) VALUES (51, $1)', [i]);
        timeline2.push(i);
      }
      await w.end();
      iptables('-D', CHAIN, ...rule);
      ruleOn = false;
      // The old primary comes back and rewinds onto the new timeline; r2 cannot follow it.
      await kubelet.resume(`${NS}/${p}`);
      await waitUntil(
        `${p} streaming the new timeline with its commits`,
        async () =>
          Number(
            (
              await onInstance<{ n: string }>(
                p,
                'SELECT count(*) AS n FROM history WHERE run = 51',
                'nox',
              ).catch(() => [{ n: '0' }])
            )[0]!.n,
          ) === 50,
        120_000,
        op.service,
      );
      const stranded = await lsn(r2);
      const follower = await lsn(p);
      testLog(
        `stranded ${r2} received ${stranded} of timeline ${timeline}; ${p} received ${follower} of timeline ${timeline + 1}`,
      );
      // The stranded replica is ahead by position: a choice by LSN alone would take it.
      expect(compareLsn(stranded, follower)).toBe(1);

      await kubelet.stop(`${NS}/${r1}`);
      const after = await waitStatus('a new primary after the second failover', newPrimary(r1), 90_000);
      expect(after.status!.currentPrimary).toBe(p);
      const rows = await onInstance<{ seq: string }>(p, 'SELECT seq FROM history WHERE run = 51', 'nox');
      expect(rows.map((r) => Number(r.seq)).sort((x, y) => x - y)).toEqual(timeline2);
      expect(after.status!.timeline).toBe(timeline + 2);

      // The request reaches r2: it rewinds onto timeline +2 and streams every commit of it.
      kubelet.cutMetadata(`${NS}/${r2}`, false);
      await waitUntil(
        `${r2} streaming timeline ${timeline + 2} with its commits`,
        async () => {
          const [row] = await onInstance<{ tli: number | null; n: string }>(
            r2,
            'SELECT (SELECT received_tli FROM pg_stat_wal_receiver WHERE status = $$streaming$$) AS tli, (SELECT count(*) FROM history WHERE run = 51) AS n',
            'nox',
          ).catch(() => []);
          return row?.tli === timeline + 2 && Number(row.n) === 50;
        },
        120_000,
        op.service,
      );
      testLog(`stranded ${r2} rewound onto timeline ${timeline + 2}`);
    } finally {
      kubelet.cutMetadata(`${NS}/${r2}`, false);
      if (ruleOn) iptables('-D', CHAIN, ...rule);
      await kubelet.resume(`${NS}/${p}`).catch(() => {});
    }
  }, 600_000);
});
