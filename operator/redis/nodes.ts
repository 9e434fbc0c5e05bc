import { Redis } from 'ioredis';
import { type Action, formatSlots, type PodView, parseClusterNodes } from './topology.js';

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
  }
}

function command(a: Action): string[] {
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
    for (const action of actions) {
      try {
        let c = clients.get(action.pod);
        if (!c) {
          const ip = ipOf(action.pod);
          if (!ip) throw new Error(`pod ${action.pod} has no IP`);
          c = adminClient(ip, access);
          clients.set(action.pod, c);
          await c.connect();
        }
        await c.call('CLUSTER', ...command(action));
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
