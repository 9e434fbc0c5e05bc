import { freePorts } from './ports.js';
import { waitUntil } from './process.js';
import { type RedisServer, startRedis, withProbe } from './redis.js';

export const CLUSTER_SLOTS = 16384;

export interface RedisClusterOptions {
  /** Default 3. */
  masters?: number;
  /** Default 1. */
  replicasPerMaster?: number;
  /**
   * `cluster-node-timeout`. Redis's 15 s default would make every failover test wait
   * that long; 3 s fails over quickly yet tolerates a loaded 2-core machine.
   */
  nodeTimeoutMs?: number;
}

/** A node as the cluster was formed. */
export interface NodeLayout {
  port: number;
  role: 'master' | 'replica';
  id: string;
}

/** One node as some live node's `CLUSTER NODES` describes it. */
export interface ClusterNode {
  port: number;
  id: string;
  role: 'master' | 'replica';
  /** For a replica: the id of its master. */
  masterId?: string;
  /** Owned slot ranges, inclusive. */
  slots: Array<[number, number]>;
  /** Raw flags, e.g. `myself`, `fail?`, `fail`, `handshake`. */
  flags: string[];
}

export interface RedisCluster {
  /** The layout as formed: masters first, then replicas. Roles change on failover; see topology(). */
  readonly nodes: readonly NodeLayout[];
  /** For `new Cluster(startupNodes)`. */
  readonly startupNodes: Array<{ host: string; port: number }>;
  /** The current topology, as seen by the first running node. */
  topology(): Promise<ClusterNode[]>;
  /** Current masters that own slots and are not marked failed. */
  masters(): Promise<ClusterNode[]>;
  /** The master that currently owns `key`'s slot. */
  masterForKey(key: string): Promise<ClusterNode>;
  /**
   * Resolves when the cluster has settled around the nodes that are running: all 16384 slots
   * served, running nodes healthy and stopped ones marked FAIL, one agreed view of roles and
   * slots, replication links up, no AOF rewrite pending; with all nodes up, also the full
   * masters × replicas shape. So after killNode(master) it resolves once the failover is done,
   * and after restartNode() once the node has rejoined (a former master as a replica).
   */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** SIGKILL one node (a crash). A master's replica takes over after about nodeTimeoutMs + 1 s. */
  killNode(port: number): Promise<void>;
  /** Starts a stopped/killed node again with its dir and nodes.conf: it rejoins the cluster. */
  restartNode(port: number): Promise<void>;
  stop(): Promise<void>;
}

const host = '127.0.0.1';

/**
 * Starts masters × (1 + replicasPerMaster) redis-server processes in cluster mode (AOF on)
 * and forms the cluster by hand rather than with `redis-cli --cluster create`, so that the
 * layout is deterministic: the first `masters` ports are masters with equal contiguous slot
 * ranges, and replica k replicates master k % masters.
 */
export async function startRedisCluster(opts: RedisClusterOptions = {}): Promise<RedisCluster> {
  const nMasters = opts.masters ?? 3;
  const perMaster = opts.replicasPerMaster ?? 1;
  const nodeTimeout = opts.nodeTimeoutMs ?? 3000;
  const total = nMasters * (1 + perMaster);
  // Each node also listens on port + 10000 (the cluster bus), which must be free too.
  const ports = await freePorts(total, { busOffset: 10000 });
  const clusterArgs = [
    '--cluster-enabled',
    'yes',
    // Relative to the node's own --dir, so every node has its own.
    '--cluster-config-file',
    'nodes.conf',
    '--cluster-node-timeout',
    String(nodeTimeout),
    // Let a replica take over however long its link was down: tests kill nodes on purpose
    // and expect a failover, not a cluster that stays down by design.
    '--cluster-replica-validity-factor',
    '0',
    // Masters wait 5 s by default before a diskless full sync, hoping more replicas join;
    // every replica (re)attach would pay that.
    '--repl-diskless-sync-delay',
    '0',
  ];

  const servers = new Map<number, RedisServer>();
  const nodes: NodeLayout[] = [];
  const cluster = makeHandle(ports, servers, nodes, nMasters, perMaster);
  try {
    // allSettled, so that the nodes that did start are known to stop() if one fails.
    const started = await Promise.allSettled(
      ports.map((port) => startRedis({ port, name: `redis-cluster-${port}`, extraArgs: clusterArgs })),
    );
    for (const r of started) if (r.status === 'fulfilled') servers.set(r.value.port, r.value);
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    const ids = await Promise.all(ports.map((p) => cmd(p, 'CLUSTER', 'MYID')));

    // Distinct config epochs up front (as redis-cli does), so that slot ownership never
    // has to be settled by Redis's slower epoch-collision handling.
    await Promise.all(ports.map((p, i) => cmd(p, 'CLUSTER', 'SET-CONFIG-EPOCH', String(i + 1))));
    for (let i = 0; i < nMasters; i++) {
      const [lo, hi] = slotRange(i, nMasters);
      await cmd(ports[i]!, 'CLUSTER', 'ADDSLOTSRANGE', String(lo), String(hi));
    }
    for (const p of ports.slice(1)) await cmd(ports[0]!, 'CLUSTER', 'MEET', host, String(p));
    // A replica can only REPLICATE a master it already knows about.
    await waitUntil(
      'all redis cluster nodes to know each other',
      async () => {
        const views = await Promise.all(ports.map((p) => nodesOf(p)));
        return views.every((v) => v.length === total && v.every((n) => !n.flags.includes('handshake')));
      },
      30_000,
    );
    for (let k = 0; k < total - nMasters; k++) {
      await cmd(ports[nMasters + k]!, 'CLUSTER', 'REPLICATE', ids[k % nMasters]!);
    }

    ports.forEach((port, i) => {
      nodes.push({ port, id: ids[i]!, role: i < nMasters ? 'master' : 'replica' });
    });
    await cluster.waitHealthy(60_000);
    return cluster;
  } catch (e) {
    await cluster.stop();
    throw e;
  }
}

function makeHandle(
  ports: number[],
  servers: Map<number, RedisServer>,
  nodes: NodeLayout[],
  nMasters: number,
  perMaster: number,
): RedisCluster {
  const server = (port: number) => {
    const s = servers.get(port);
    if (s === undefined) throw new Error(`no cluster node on port ${port}`);
    return s;
  };
  const running = () => [...servers.values()].filter((s) => s.running()).map((s) => s.port);

  const topology = async () => {
    const [first] = running();
    if (first === undefined) throw new Error('no redis cluster node is running');
    return nodesOf(first);
  };

  const masters = async () =>
    (await topology()).filter(
      (n) => n.role === 'master' && n.slots.length > 0 && !n.flags.some((f) => f.startsWith('fail')),
    );

  /**
   * Settled with respect to which processes are up: every running node reports the cluster
   * ok with all slots served, sees the other running nodes healthy and the stopped ones
   * failed (FAIL, not just suspected) and slotless, and all running nodes share one view of
   * roles and slot ownership (changes spread by gossip, so a single node's view can lag).
   */
  const healthy = async (): Promise<boolean> => {
    const live = new Set(running());
    const layouts = new Set<string>();
    let view: ClusterNode[] = [];
    for (const port of live) {
      const info = await cmd(port, 'CLUSTER', 'INFO');
      if (!/^cluster_state:ok\r?$/m.test(info)) return false;
      if (!new RegExp(`^cluster_slots_ok:${CLUSTER_SLOTS}\\r?$`, 'm').test(info)) return false;
      view = await nodesOf(port);
      for (const n of view) {
        const suspect = n.flags.some((f) => f.startsWith('fail') || f === 'handshake' || f === 'noaddr');
        if (live.has(n.port) ? suspect : !n.flags.includes('fail') || n.slots.length > 0) return false;
      }
      layouts.add(
        view
          .map((n) => `${n.id} ${n.role} ${n.masterId ?? '-'} ${n.slots.map((r) => r.join('-')).join(',')}`)
          .sort()
          .join('\n'),
      );
      const repl = await withProbe(port, undefined, (c) => c.info('replication'));
      if (/^role:slave\r?$/m.test(repl) && !/^master_link_status:up\r?$/m.test(repl)) return false;
      // After a full sync a replica rewrites its AOF; until that is done its data is not
      // durable and it ignores SIGTERM. Tests should start from a quiet cluster.
      const persistence = await withProbe(port, undefined, (c) => c.info('persistence'));
      if (!/^aof_rewrite_in_progress:0\r?$/m.test(persistence)) return false;
      if (!/^aof_rewrite_scheduled:0\r?$/m.test(persistence)) return false;
    }
    if (layouts.size !== 1) return false;
    // With every node up, insist on the full shape: all masters serving, each with its replicas.
    if (live.size === ports.length) {
      const serving = view.filter((n) => n.role === 'master' && n.slots.length > 0);
      if (serving.length !== nMasters) return false;
      if (serving.some((m) => view.filter((r) => r.masterId === m.id).length !== perMaster)) return false;
    }
    return true;
  };

  return {
    nodes,
    startupNodes: ports.map((port) => ({ host, port })),
    topology,
    masters,
    async masterForKey(key) {
      const slot = Number(await cmd(running()[0]!, 'CLUSTER', 'KEYSLOT', key));
      const m = (await masters()).find((n) => n.slots.some(([lo, hi]) => slot >= lo && slot <= hi));
      if (m === undefined) throw new Error(`no master serves slot ${slot}`);
      return m;
    },
    async waitHealthy(timeoutMs = 60_000) {
      await waitUntil('the redis cluster to be healthy', healthy, timeoutMs);
    },
    async killNode(port) {
      await server(port).kill();
    },
    async restartNode(port) {
      await server(port).restart();
    },
    async stop() {
      await Promise.all([...servers.values()].map((s) => s.stop()));
    },
  };
}

/** Inclusive slot range of master i of n, split like redis-cli does (contiguous, near-equal). */
function slotRange(i: number, n: number): [number, number] {
  const per = CLUSTER_SLOTS / n;
  return [Math.round(i * per), Math.round((i + 1) * per) - 1];
}

async function cmd(port: number, ...args: string[]): Promise<string> {
  const [name, ...rest] = args;
  return String(await withProbe(port, undefined, (c) => c.call(name!, ...rest)));
}

/**
 * Parses `CLUSTER NODES`:
 * `<id> <ip:port@cport> <flags> <master|-> <ping> <pong> <epoch> <link> <slot|lo-hi>...`
 * (entries like `[123->-id]` are migrations in progress, ignored here).
 */
async function nodesOf(port: number): Promise<ClusterNode[]> {
  const text = await cmd(port, 'CLUSTER', 'NODES');
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const [id, addr, flagStr, master, , , , , ...slotTokens] = line.trim().split(' ');
      const flags = flagStr!.split(',');
      const slots = slotTokens
        .filter((t) => !t.startsWith('['))
        .map((t): [number, number] => {
          const [lo, hi] = t.split('-').map(Number);
          return [lo!, hi ?? lo!];
        });
      return {
        id: id!,
        port: Number(addr!.split('@')[0]!.split(':').pop()),
        role: flags.includes('master') ? 'master' : 'replica',
        ...(master !== '-' ? { masterId: master } : {}),
        slots,
        flags,
      };
    });
}
