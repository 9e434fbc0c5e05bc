import { Redis } from 'ioredis';
import { type Action, formatSlots, type PodView, parseClusterNodes, toRanges } from './topology.js';

/**
 * The operator's side of the Redis protocol: short-lived admin connections to the pods'
 * nodes (observe with CLUSTER NODES / CLUSTER INFO, then execute a plan's commands).
 * Connections fail fast instead of retrying: the next reconcile is the retry.
 */

export interface NodeAccess {
  readonly password: string;
  readonly port: number;
  readonly connectTimeoutMs?: number;
  readonly commandTimeoutMs?: number;
}

export function adminClient(ip: string, access: NodeAccess): Redis {
  const c = new Redis({
    host: ip,
    port: access.port,
    password: access.password,
    lazyConnect: true,
    enableOfflineQueue: false,
    enableReadyCheck: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: access.connectTimeoutMs ?? 2000,
    commandTimeout: access.commandTimeoutMs ?? 5000,
  });
  c.on('error', () => {
    /* surfaced by the failing command */
  });
  return c;
}

export async function withNode<T>(ip: string, access: NodeAccess, fn: (c: Redis) => Promise<T>): Promise<T> {
  const c = adminClient(ip, access);
  try {
    await c.connect();
    return await fn(c);
  } finally {
    c.disconnect();
  }
}

export type PodBasics = Omit<PodView, 'redis' | 'error'>;

/** Asks a ready pod's node for its view of the cluster; a pod that is not ready is left as it is. */
export async function observePod(base: PodBasics, access: NodeAccess): Promise<PodView> {
  if (!base.ready || !base.ip) return base;
  const ip = base.ip;
  try {
    return await withNode(ip, access, async (c) => {
      const [nodesText, info] = await Promise.all([
        c.call('CLUSTER', 'NODES') as Promise<string>,
        c.call('CLUSTER', 'INFO') as Promise<string>,
      ]);
      const view = parseClusterNodes(String(nodesText));
      const self = view.find((n) => n.flags.includes('myself'));
      if (!self) throw new Error('CLUSTER NODES has no "myself" entry');
      const epoch = /^cluster_current_epoch:(\d+)/m.exec(String(info));
      return {
        ...base,
        redis: {
          // A node that has not announced its IP yet lists itself with an empty address.
          self: self.ip ? self : { ...self, ip },
          view: view.map((n) => (n === self && !n.ip ? { ...n, ip } : n)),
          currentEpoch: Number(epoch?.[1] ?? 0),
          clusterStateOk: /^cluster_state:ok\r?$/m.test(String(info)),
        },
      };
    });
  } catch (e) {
    return { ...base, error: e instanceof Error ? e.message : String(e) };
  }
}

export function describeAction(a: Action): string {
  switch (a.kind) {
    case 'setEpoch':
      return `${a.pod}: CLUSTER SET-CONFIG-EPOCH ${a.epoch}`;
    case 'addSlots':
      return `${a.pod}: CLUSTER ADDSLOTSRANGE ${formatSlots(a.ranges)}`;
    case 'meet':
      return `${a.pod}: CLUSTER MEET ${a.ip} ${a.port} ${a.busPort}`;
    case 'replicate':
      return `${a.pod}: CLUSTER REPLICATE ${a.masterId}`;
    case 'forget':
      return `${a.pod}: CLUSTER FORGET ${a.id}`;
    case 'moveSlots':
      return `${a.pod} → ${a.targetPod}: move ${a.slots.length} slots (${formatSlots(toRanges(a.slots))}) with their keys`;
  }
}

type SimpleAction = Exclude<Action, { kind: 'moveSlots' }>;

function command(a: SimpleAction): string[] {
  switch (a.kind) {
    case 'setEpoch':
      return ['SET-CONFIG-EPOCH', String(a.epoch)];
    case 'addSlots':
      return ['ADDSLOTSRANGE', ...a.ranges.flatMap(([lo, hi]) => [String(lo), String(hi)])];
    case 'meet':
      return ['MEET', a.ip, String(a.port), String(a.busPort)];
    case 'replicate':
      return ['REPLICATE', a.masterId];
    case 'forget':
      return ['FORGET', a.id];
  }
}

export interface ExecuteResult {
  readonly done: Action[];
  readonly failed: { action: Action; error: string }[];
}

/** Runs the actions in order (one connection per pod); a failed one does not stop the rest. */
export async function execute(
  actions: readonly Action[],
  ipOf: (pod: string) => string | undefined,
  access: NodeAccess,
): Promise<ExecuteResult> {
  const clients = new Map<string, Redis>();
  const done: Action[] = [];
  const failed: { action: Action; error: string }[] = [];
  try {
    const connect = async (pod: string) => {
      let c = clients.get(pod);
      if (!c) {
        const ip = ipOf(pod);
        if (!ip) throw new Error(`pod ${pod} has no IP`);
        c = adminClient(ip, access);
        clients.set(pod, c);
        await c.connect();
      }
      return c;
    };
    for (const action of actions) {
      try {
        const c = await connect(action.pod);
        if (action.kind === 'moveSlots') {
          const target = await connect(action.targetPod);
          for (const slot of action.slots)
            await moveSlot(c, target, action, slot, ipOf(action.targetPod)!, access);
        } else await c.call('CLUSTER', ...command(action));
        done.push(action);
      } catch (e) {
        failed.push({ action, error: e instanceof Error ? e.message : String(e) });
      }
    }
  } finally {
    for (const c of clients.values()) c.disconnect();
  }
  return { done, failed };
}

/**
 * One slot with its keys, the way redis-cli moves slots: the target imports, the source
 * migrates, keys go over with MIGRATE (REPLACE: a copy left by an interrupted attempt is
 * stale), then both are told the new owner (the target first, so it bumps its epoch).
 * A target that already owns the slot (an earlier attempt got that far) only needs the
 * source told.
 *
 * The target must already see the source as the slot's owner. A node that imports a slot
 * ignores what gossip says about the slot's owner, so a target set IMPORTING before it had
 * learned the owner (a master just met) never learns it, and refuses every key MIGRATE sends
 * ("CLUSTERDOWN Hash slot not served") for good. Such a target is set back to STABLE when it
 * holds no keys of the slot (none can have arrived), and the move waits for its view.
 */
async function moveSlot(
  source: Redis,
  target: Redis,
  move: Extract<Action, { kind: 'moveSlots' }>,
  slot: number,
  targetIp: string,
  access: NodeAccess,
): Promise<void> {
  const s = String(slot);
  const owner = await ownerInViewOf(target, slot);
  if (owner !== move.sourceId && owner !== move.targetId) {
    const imported = Number(await target.call('CLUSTER', 'COUNTKEYSINSLOT', s));
    if (imported === 0) await target.call('CLUSTER', 'SETSLOT', s, 'STABLE');
    throw new Error(
      `${move.targetPod} does not see slot ${slot} as ${move.pod}'s yet (it sees ${
        owner === undefined ? 'no owner' : `owner ${owner.slice(0, 8)}`
      }); waiting for its view of the cluster to catch up`,
    );
  }
  if (owner !== move.targetId) {
    await target.call('CLUSTER', 'SETSLOT', s, 'IMPORTING', move.sourceId);
    await source.call('CLUSTER', 'SETSLOT', s, 'MIGRATING', move.targetId);
    for (;;) {
      const keys = (await source.call('CLUSTER', 'GETKEYSINSLOT', s, '500')) as string[];
      if (keys.length === 0) break;
      await source.call(
        'MIGRATE',
        targetIp,
        String(access.port),
        '',
        '0',
        '10000',
        'REPLACE',
        'AUTH',
        access.password,
        'KEYS',
        ...keys,
      );
    }
    await target.call('CLUSTER', 'SETSLOT', s, 'NODE', move.targetId);
  }
  await source.call('CLUSTER', 'SETSLOT', s, 'NODE', move.targetId);
}

/** The master that `node`'s own CLUSTER NODES binds `slot` to, if any. */
async function ownerInViewOf(node: Redis, slot: number): Promise<string | undefined> {
  const view = parseClusterNodes(String(await node.call('CLUSTER', 'NODES')));
  return view.find((e) => e.slots.some(([lo, hi]) => lo <= slot && slot <= hi))?.id;
}
