import { describe, expect, it } from 'vitest';
import type { RedisCluster } from '../../common/resources/types.gen.js';
import { computeStatus } from './status.js';
import {
  type Action,
  CLUSTER_SLOTS,
  formatSlots,
  type Memory,
  MOVE_BATCH,
  type NodeEntry,
  type PodView,
  parseClusterNodes,
  plan,
  type SlotRange,
  slotCount,
  slotRange,
  splitSlots,
  toRanges,
} from './topology.js';

/**
 * A small model of Redis Cluster that the planner's commands act on, with gossip settled
 * at once: MEET joins two nodes' membership, FORGET drops a node from one node's view,
 * ADDSLOTSRANGE / REPLICATE / SET-CONFIG-EPOCH do what they say; a node that is down
 * appears as `fail` to the others.
 */
interface SimNode {
  id: string;
  pod: string;
  ordinal: number;
  ip: string;
  k8sNode: string;
  up: boolean;
  epoch: number;
  role: 'master' | 'replica';
  masterId?: string;
  slots: SlotRange[];
  known: Set<string>;
}

class Sim {
  readonly nodes = new Map<string, SimNode>(); // by id
  #ids = 0;
  #ips = 0;
  memory: Memory = {};

  constructor(n: number, k8sNodes: (i: number) => string = () => 'node-a') {
    for (let i = 0; i < n; i++) this.addPod(i, k8sNodes(i));
  }

  addPod(ordinal: number, k8sNode = 'node-a'): SimNode {
    const id = `id${String(this.#ids++).padStart(38, '0')}`;
    const node: SimNode = {
      id,
      pod: `rc-${ordinal}`,
      ordinal,
      ip: `127.0.9.${++this.#ips}`,
      k8sNode,
      up: true,
      epoch: 0,
      role: 'master',
      slots: [],
      known: new Set([id]),
    };
    this.nodes.set(id, node);
    return node;
  }

  byPod(pod: string): SimNode {
    const n = [...this.nodes.values()].find((x) => x.pod === pod);
    if (!n) throw new Error(pod);
    return n;
  }

  entry(viewer: SimNode, n: SimNode): NodeEntry {
    const flags = [
      ...(n === viewer ? ['myself'] : []),
      n.role === 'master' ? 'master' : 'slave',
      ...(n.up ? [] : ['fail']),
    ];
    return {
      id: n.id,
      ip: n.ip,
      port: 6379,
      busPort: 16379,
      flags,
      role: n.role,
      ...(n.masterId ? { masterId: n.masterId } : {}),
      configEpoch: n.epoch,
      connected: n.up,
      slots: n.slots,
    };
  }

  views(): PodView[] {
    // A node without a pod (pod '') is a ghost: others may still know it.
    return [...this.nodes.values()]
      .filter((n) => n.pod !== '')
      .map((n) => ({
        pod: n.pod,
        ordinal: n.ordinal,
        ip: n.ip,
        ready: n.up,
        k8sNode: n.k8sNode,
        ...(n.up
          ? {
              redis: {
                self: this.entry(n, n),
                view: [...n.known].map((id) => this.entry(n, this.nodes.get(id)!)),
                currentEpoch: n.epoch,
                clusterStateOk: true,
              },
            }
          : {}),
      }));
  }

  apply(a: Action): void {
    const n = this.byPod(a.pod);
    switch (a.kind) {
      case 'setEpoch':
        expect(n.known.size).toBe(1);
        n.epoch = a.epoch;
        break;
      case 'addSlots':
        n.slots = [...n.slots, ...a.ranges];
        break;
      case 'meet': {
        const other = [...this.nodes.values()].find((x) => x.ip === a.ip && x.up);
        if (!other) break;
        const all = new Set([...n.known, ...other.known]);
        for (const id of all) {
          const m = this.nodes.get(id);
          if (m) for (const x of all) m.known.add(x);
        }
        break;
      }
      case 'replicate':
        expect(n.slots).toEqual([]);
        expect(n.known.has(a.masterId)).toBe(true);
        n.role = 'replica';
        n.masterId = a.masterId;
        break;
      case 'forget':
        expect(n.masterId).not.toBe(a.id);
        n.known.delete(a.id);
        break;
      case 'moveSlots': {
        const target = this.byPod(a.targetPod);
        expect(target.role).toBe('master');
        const moving = new Set(a.slots);
        const owned = (r: SlotRange[]) =>
          r.flatMap(([lo, hi]) => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i));
        const had = new Set(owned(n.slots));
        expect([...moving].filter((x) => !had.has(x))).toEqual([]);
        n.slots = toRanges(owned(n.slots).filter((x) => !moving.has(x)));
        target.slots = toRanges([...owned(target.slots), ...moving].sort((x, y) => x - y));
        break;
      }
    }
  }

  /** Plans and applies until nothing is left to do; returns the number of rounds. */
  converge(masters = 3, replicasPerMaster = 1, total = masters * (1 + replicasPerMaster)): number {
    for (let round = 1; round <= 20; round++) {
      const p = plan(this.views(), { masters, replicasPerMaster }, this.memory, {
        port: 6379,
        busPort: 16379,
        totalPods: total,
      });
      if (p.actions.length === 0) return round;
      for (const a of p.actions) this.apply(a);
      this.remember();
    }
    throw new Error('did not converge');
  }

  remember(): void {
    const m: Record<string, string> = { ...this.memory };
    for (const n of this.nodes.values()) if (n.up) m[n.pod] = n.id;
    this.memory = m;
  }

  /** Failover as Redis does it: the first replica of a down master takes its slots. */
  failover(masterPod: string): SimNode {
    const m = this.byPod(masterPod);
    const r = [...this.nodes.values()].find((x) => x.masterId === m.id && x.up)!;
    r.role = 'master';
    r.masterId = undefined;
    r.slots = m.slots;
    m.slots = [];
    m.role = 'replica';
    m.masterId = r.id;
    return r;
  }

  masters(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.role === 'master' && n.slots.length > 0);
  }
}

const cluster: RedisCluster = {
  apiVersion: 'nox.dev/v1alpha1',
  kind: 'RedisCluster',
  metadata: { name: 'rc', namespace: 'nox', uid: 'u', generation: 1 },
  spec: { masters: 3, replicasPerMaster: 1, image: 'redis:7.0' },
};
const statusOf = (sim: Sim) =>
  computeStatus({
    cluster,
    pods: sim.views(),
    memory: sim.memory,
    shape: { masters: 3, replicasPerMaster: 1 },
    totalPods: 6,
    port: 6379,
    now: new Date('2026-01-01T00:00:00Z'),
  });
const cond = (s: ReturnType<typeof statusOf>, type: string) => s.conditions?.find((c) => c.type === type);

describe('CLUSTER NODES parsing', () => {
  it('reads ids, addresses, roles, masters and slot ranges', () => {
    const text = [
      'e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.3.2:6379@16379 myself,master - 0 0 1 connected 0-5460',
      '67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.3.5:6379@16379,host-5 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1700000000000 1 connected',
      '292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.3.3:6379@16379 master,fail - 1700000000000 1700000000000 2 disconnected 5461-10922 [5461->-abc]',
      '00000000000000000000000000000000000000aa :0@0 master,noaddr - 0 0 0 disconnected',
      '',
    ].join('\n');
    const nodes = parseClusterNodes(text);
    expect(nodes).toHaveLength(4);
    expect(nodes[0]).toMatchObject({
      ip: '127.0.3.2',
      port: 6379,
      busPort: 16379,
      role: 'master',
      slots: [[0, 5460]],
    });
    expect(nodes[1]).toMatchObject({ role: 'replica', masterId: nodes[0]!.id, busPort: 16379, slots: [] });
    expect(nodes[2]).toMatchObject({
      flags: ['master', 'fail'],
      connected: false,
      slots: [[5461, 10922]],
      migrating: [{ slot: 5461, to: 'abc' }],
    });
    expect(
      parseClusterNodes('aa 1.2.3.4:6379@16379 myself,master - 0 0 1 connected 7 [12-<-bb]')[0],
    ).toMatchObject({
      slots: [[7, 7]],
      importing: [{ slot: 12, from: 'bb' }],
    });
    expect(nodes[3]).toMatchObject({ ip: '', flags: ['master', 'noaddr'] });
  });

  it('splits slots evenly and formats ranges', () => {
    const ranges = [0, 1, 2].map((i) => slotRange(i, 3));
    expect(ranges).toEqual([
      [0, 5460],
      [5461, 10922],
      [10923, 16383],
    ]);
    expect(splitSlots([1, 2, 3, 7, 8, 9], 2)).toEqual([[[1, 3]], [[7, 9]]]);
    expect(
      formatSlots([
        [5, 5],
        [0, 3],
      ]),
    ).toBe('0-3,5');
  });
});

describe('topology plan', () => {
  it('waits for every pod before forming, then forms 3 masters with one replica each', () => {
    const sim = new Sim(6);
    sim.byPod('rc-4').up = false;
    const waiting = plan(
      sim.views(),
      { masters: 3, replicasPerMaster: 1 },
      {},
      {
        port: 6379,
        busPort: 16379,
        totalPods: 6,
      },
    );
    expect(waiting.actions).toEqual([]);
    expect(waiting.waiting).toMatch(/5 ready/);
    expect(cond(statusOf(sim), 'Ready')?.reason).toBe('NodesNotReady');
    expect(cond(statusOf(sim), 'Degraded')?.status).toBe('False');

    sim.byPod('rc-4').up = true;
    sim.converge();
    const masters = sim.masters().sort((a, b) => a.ordinal - b.ordinal);
    expect(masters.map((m) => m.pod)).toEqual(['rc-0', 'rc-1', 'rc-2']);
    expect(masters.reduce((n, m) => n + slotCount(m.slots), 0)).toBe(CLUSTER_SLOTS);
    for (const m of masters)
      expect([...sim.nodes.values()].filter((r) => r.masterId === m.id)).toHaveLength(1);
    expect(new Set([...sim.nodes.values()].map((n) => n.epoch)).size).toBe(6);

    const s = statusOf(sim);
    expect(s.slotsCovered).toBe(CLUSTER_SLOTS);
    expect(s.readyNodes).toBe(6);
    expect(cond(s, 'Ready')).toMatchObject({ status: 'True', reason: 'ClusterHealthy' });
    expect(cond(s, 'Degraded')?.status).toBe('False');
    expect(s.nodes?.map((n) => n.role)).toEqual([
      'master',
      'master',
      'master',
      'replica',
      'replica',
      'replica',
    ]);
    expect(s.nodes?.[0]).toMatchObject({ pod: 'rc-0', address: '127.0.9.1:6379', slots: '0-5460' });
  });

  it('spreads masters over Kubernetes nodes and keeps replicas off their master’s node', () => {
    const sim = new Sim(6, (i) => (i < 3 ? 'node-a' : 'node-b'));
    sim.converge();
    const masters = sim.masters();
    expect(new Set(masters.map((m) => m.k8sNode))).toEqual(new Set(['node-a', 'node-b']));
    for (const r of sim.nodes.values()) {
      if (r.role !== 'replica') continue;
      expect(r.k8sNode).not.toBe(sim.nodes.get(r.masterId!)!.k8sNode);
    }
  });

  it('reports a lost master as Degraded, then Ready once it returns as a replica after failover', () => {
    const sim = new Sim(6);
    sim.converge();
    sim.byPod('rc-0').up = false;
    let s = statusOf(sim);
    expect(cond(s, 'Degraded')).toMatchObject({ status: 'True', reason: 'NodesNotReady' });
    expect(cond(s, 'Ready')?.status).toBe('False');
    expect(s.slotsCovered).toBe(CLUSTER_SLOTS - 5461);
    // While the master is down its replica must not be told anything, nor the master forgotten.
    expect(sim.converge()).toBe(1);

    const promoted = sim.failover('rc-0');
    s = statusOf(sim);
    expect(s.slotsCovered).toBe(CLUSTER_SLOTS);
    expect(cond(s, 'Degraded')?.status).toBe('True');
    sim.byPod('rc-0').up = true;
    sim.converge();
    s = statusOf(sim);
    expect(cond(s, 'Ready')?.status).toBe('True');
    expect(s.nodes?.find((n) => n.pod === 'rc-0')).toMatchObject({ role: 'replica', masterId: promoted.id });
  });

  it('re-MEETs a pod that comes back with a new IP', () => {
    const sim = new Sim(6);
    sim.converge();
    const n = sim.byPod('rc-4');
    // Its peers lose it; it comes back at a new address (a new pod, same data).
    for (const m of sim.nodes.values()) if (m !== n) m.known.delete(n.id);
    n.known = new Set([n.id]);
    n.ip = '127.0.9.99';
    const p = plan(sim.views(), { masters: 3, replicasPerMaster: 1 }, sim.memory, {
      port: 6379,
      busPort: 16379,
      totalPods: 6,
    });
    expect(p.actions).toEqual([{ kind: 'meet', pod: 'rc-0', ip: '127.0.9.99', port: 6379, busPort: 16379 }]);
    sim.converge();
    expect(cond(statusOf(sim), 'Ready')?.status).toBe('True');
  });

  it('forgets a node whose pod came back empty, and makes the new node a replica', () => {
    const sim = new Sim(6);
    sim.converge();
    const old = sim.byPod('rc-5');
    const master = old.masterId!;
    // The pod is deleted; its replacement has an empty data dir (emptyDir): a new node id.
    old.up = false;
    old.pod = '';
    const fresh = sim.addPod(5);
    const p = plan(sim.views(), { masters: 3, replicasPerMaster: 1 }, sim.memory, {
      port: 6379,
      busPort: 16379,
      totalPods: 6,
    });
    expect(p.actions.filter((a) => a.kind === 'forget').map((a) => a.pod)).toEqual([
      'rc-0',
      'rc-1',
      'rc-2',
      'rc-3',
      'rc-4',
    ]);
    expect(p.actions.some((a) => a.kind === 'meet' && a.ip === fresh.ip)).toBe(true);
    sim.converge();
    expect([...sim.nodes.values()].filter((n) => n.known.has(old.id)).map((n) => n.pod)).toEqual(['']);
    expect(fresh.role).toBe('replica');
    expect(fresh.masterId).toBe(master);
    expect(cond(statusOf(sim), 'Ready')?.status).toBe('True');
  });

  it('gives the slots of a master lost for good (no replica) to an empty node', () => {
    const sim = new Sim(3);
    sim.converge(3, 0);
    const lost = sim.byPod('rc-2');
    lost.up = false;
    lost.pod = '';
    const fresh = sim.addPod(2);
    sim.converge(3, 0);
    expect(formatSlots(fresh.slots)).toBe('10923-16383');
  });

  it('does not forget the master of a live replica before it took over', () => {
    const sim = new Sim(6);
    sim.converge();
    const m = sim.byPod('rc-1');
    m.up = false;
    const p = plan(
      sim.views(),
      { masters: 3, replicasPerMaster: 1 },
      {},
      { port: 6379, busPort: 16379, totalPods: 6 },
    );
    expect(p.actions.filter((a) => a.kind === 'forget')).toEqual([]);
  });

  it('moves a replica from a master with two to a master with none', () => {
    const sim = new Sim(6);
    sim.converge();
    const [m0, m1] = sim.masters().sort((a, b) => a.ordinal - b.ordinal);
    const r = [...sim.nodes.values()].find((n) => n.masterId === m1!.id)!;
    r.masterId = m0!.id;
    sim.converge();
    for (const m of sim.masters())
      expect([...sim.nodes.values()].filter((n) => n.masterId === m.id)).toHaveLength(1);
  });
});

describe('topology plan while a master is lost with its pod replaced', () => {
  it('waits for the failover before attaching the new empty node, then gives it to the promoted master', () => {
    const sim = new Sim(6);
    sim.converge();
    const old = sim.byPod('rc-1');
    // The pod is deleted and comes back at once, empty (emptyDir): new id, new IP.
    old.up = false;
    old.pod = '';
    const fresh = sim.addPod(1);
    const opts = { port: 6379, busPort: 16379, totalPods: 6 };
    sim.converge(); // MEETs the new node, forgets nothing yet, attaches nothing
    expect(fresh.role).toBe('master');
    expect([...sim.nodes.values()].some((n) => n.pod !== '' && n.known.has(old.id))).toBe(true);
    const p = plan(sim.views(), { masters: 3, replicasPerMaster: 1 }, sim.memory, opts);
    expect(p.waiting).toMatch(/waiting for its replica to take over/);

    const promoted = sim.failover('');
    sim.converge();
    expect([...sim.nodes.values()].filter((n) => n.pod !== '' && n.known.has(old.id))).toEqual([]);
    expect(fresh.role).toBe('replica');
    expect(fresh.masterId).toBe(promoted.id);
    expect(cond(statusOf(sim), 'Ready')?.status).toBe('True');
  });
});

describe('topology plan when the replaced master is not marked failing yet', () => {
  const setup = () => {
    const sim = new Sim(6);
    sim.converge();
    const old = sim.byPod('rc-1');
    old.pod = ''; // its pod is gone, but the others have not noticed the node is down
    const fresh = sim.addPod(1);
    return { sim, old, fresh };
  };

  it('never attaches the new node to the gone master', () => {
    const { sim, old, fresh } = setup();
    sim.converge();
    expect(fresh.role).toBe('master');
    old.up = false;
    const promoted = sim.failover('');
    sim.converge();
    expect(fresh.masterId).toBe(promoted.id);
    expect(cond(statusOf(sim), 'Ready')?.status).toBe('True');
  });

  it('re-attaches a replica left following a gone master, then forgets that master', () => {
    const { sim, old, fresh } = setup();
    sim.apply({ kind: 'meet', pod: 'rc-0', ip: fresh.ip, port: 6379, busPort: 16379 });
    old.up = false;
    const promoted = sim.failover('');
    // fresh was told to follow the old master before its failover, and still does.
    fresh.role = 'replica';
    fresh.masterId = old.id;
    sim.converge();
    expect(fresh.masterId).toBe(promoted.id);
    expect([...sim.nodes.values()].filter((n) => n.pod !== '' && n.known.has(old.id))).toEqual([]);
    expect(cond(statusOf(sim), 'Ready')?.status).toBe('True');
  });
});

describe('RedisCluster status for a spec or setup that cannot work', () => {
  it('reports an invalid spec as Accepted=False, and a missing Secret as Ready=False with its reason', () => {
    const base = {
      pods: [],
      memory: {},
      shape: { masters: 3, replicasPerMaster: 1 },
      totalPods: 6,
      port: 6379,
    };
    const now = new Date('2026-01-01T00:00:00Z');
    const invalid = computeStatus({
      ...base,
      cluster,
      now,
      invalid: { reason: 'InvalidSpec', message: 'config: "dir" is managed by the operator' },
    });
    expect(cond(invalid, 'Accepted')).toMatchObject({
      status: 'False',
      reason: 'InvalidSpec',
      observedGeneration: 1,
    });
    expect(cond(invalid, 'Ready')?.status).toBe('False');
    const blocked = computeStatus({
      ...base,
      cluster,
      now,
      blocked: { reason: 'PasswordSecretNotFound', message: 'Secret nox/pw does not exist' },
    });
    expect(cond(blocked, 'Accepted')?.status).toBe('True');
    expect(cond(blocked, 'Ready')).toMatchObject({ status: 'False', reason: 'PasswordSecretNotFound' });
    // A transition time is kept while the status stays the same.
    const later = computeStatus({
      ...base,
      cluster: { ...cluster, status: blocked },
      now: new Date('2026-01-01T01:00:00Z'),
      blocked: { reason: 'PasswordSecretNotFound', message: 'Secret nox/pw does not exist' },
    });
    expect(cond(later, 'Ready')?.lastTransitionTime).toBe(cond(blocked, 'Ready')?.lastTransitionTime);
  });
});

describe('scale-out', () => {
  it('moves slots with their keys onto new masters until every master holds an even share, then gives them replicas', () => {
    const sim = new Sim(6);
    sim.converge(3, 1);
    sim.addPod(6);
    sim.addPod(7);
    // New pods join as empty masters, then MEET; then the rebalancing moves slots in batches.
    let moves = 0;
    for (let round = 0; round < 40; round++) {
      const p = plan(sim.views(), { masters: 4, replicasPerMaster: 1 }, sim.memory, {
        port: 6379,
        busPort: 16379,
        totalPods: 8,
      });
      if (p.actions.length === 0) break;
      for (const a of p.actions) {
        if (a.kind === 'moveSlots') {
          moves += a.slots.length;
          expect(a.slots.length).toBeLessThanOrEqual(MOVE_BATCH);
        }
        sim.apply(a);
      }
      sim.remember();
    }
    const masters = sim.masters();
    expect(masters).toHaveLength(4);
    const counts = masters.map((m) => slotCount(m.slots));
    expect(counts.reduce((x, y) => x + y, 0)).toBe(CLUSTER_SLOTS);
    for (const c of counts) expect(Math.abs(c - CLUSTER_SLOTS / 4)).toBeLessThanOrEqual(41);
    // Only what the new master needed moved (about a quarter of the slots), not a reshuffle.
    expect(moves).toBeLessThan(CLUSTER_SLOTS / 4 + 50);
    for (const m of masters)
      expect([...sim.nodes.values()].filter((n) => n.masterId === m.id && n.role === 'replica')).toHaveLength(
        1,
      );
  });

  it('finishes a slot migration found half done before anything else', () => {
    const sim = new Sim(6);
    sim.converge(3, 1);
    const views = sim.views();
    const [src, dst] = [views[0]!, views[1]!];
    const self = { ...src.redis!.self, migrating: [{ slot: 3, to: dst.redis!.self.id }] };
    views[0] = { ...src, redis: { ...src.redis!, self } };
    const p = plan(views, { masters: 3, replicasPerMaster: 1 }, sim.memory, {
      port: 6379,
      busPort: 16379,
      totalPods: 6,
    });
    expect(p.actions).toEqual([
      {
        kind: 'moveSlots',
        pod: src.pod,
        sourceId: src.redis!.self.id,
        targetPod: dst.pod,
        targetId: dst.redis!.self.id,
        slots: [3],
      },
    ]);
  });
});
