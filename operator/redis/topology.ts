/**
 * Redis Cluster topology, as pure functions: what the nodes report (CLUSTER NODES) goes in,
 * the commands that move the cluster one step closer to the declared shape come out. The
 * reconciler observes, plans, executes and comes back; every step is safe to repeat, and
 * a step that depends on an earlier one's effect waits for the next reconcile to see it.
 *
 * Rules, in order:
 * 1. Formation: when no node claims any slot and all pods are ready, give the nodes distinct
 *    config epochs, split the 16384 slots evenly over `masters` pods (spread over Kubernetes
 *    nodes when there are several) and MEET everyone through one anchor node.
 * 2. Membership: a ready pod the anchor does not know at its current address is MEET (a pod
 *    back with a new IP); a node id no pod holds any more (its pod is gone, or came back
 *    empty under a new id) is FORGOTten on every node that still knows it; but never the
 *    master of a live replica before that replica has taken over.
 * 3. Coverage: slots nobody claims (their owner was forgotten) go to empty masters while
 *    there are fewer slot owners than `masters`, else to the owner with the fewest slots.
 * 4. Balance (scale-out): while there are fewer slot owners than `masters`, empty masters
 *    take slots from the owners above their fair share, slot by slot with their keys
 *    (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE), in bounded batches; a migration
 *    found half done (a crash in between) is finished first.
 * 5. Replicas: an empty master becomes a replica of the master with the fewest replicas
 *    (preferring one on another Kubernetes node); a master with too many replicas gives
 *    one to a master with too few.
 */

/** Slots moved per reconcile while rebalancing (each with its keys). */
export const MOVE_BATCH = 512;

export const CLUSTER_SLOTS = 16384;

export type SlotRange = readonly [number, number];

/** One line of `CLUSTER NODES`. */
export interface NodeEntry {
  readonly id: string;
  readonly ip: string;
  readonly port: number;
  readonly busPort: number;
  readonly flags: readonly string[];
  readonly role: 'master' | 'replica';
  readonly masterId?: string;
  readonly configEpoch: number;
  readonly connected: boolean;
  /** Owned slot ranges, inclusive (migrations in progress are listed apart). */
  readonly slots: readonly SlotRange[];
  /** Slots this node is handing over (`[slot->-id]`, only on the node's own line). */
  readonly migrating?: readonly { readonly slot: number; readonly to: string }[];
  /** Slots this node is taking over (`[slot-<-id]`). */
  readonly importing?: readonly { readonly slot: number; readonly from: string }[];
}

/**
 * Parses `CLUSTER NODES`:
 * `<id> <ip:port@cport[,hostname]> <flags> <master|-> <ping> <pong> <epoch> <link> <slot|lo-hi>...`
 */
export function parseClusterNodes(text: string): NodeEntry[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .map((line) => {
      const [id, addr, flagStr, master, , , epoch, link, ...slotTokens] = line.split(' ');
      const flags = (flagStr ?? '').split(',');
      const [hostPort, rest] = (addr ?? '').split('@') as [string, string | undefined];
      const colon = hostPort.lastIndexOf(':');
      const slots = slotTokens
        .filter((t) => t !== '' && !t.startsWith('['))
        .map((t): SlotRange => {
          const [lo, hi] = t.split('-').map(Number);
          return [lo!, hi ?? lo!];
        });
      const migrating: { slot: number; to: string }[] = [];
      const importing: { slot: number; from: string }[] = [];
      for (const t of slotTokens) {
        const m = /^\[(\d+)-([<>])-([0-9a-f]+)\]$/.exec(t);
        if (m?.[2] === '>') migrating.push({ slot: Number(m[1]), to: m[3]! });
        else if (m) importing.push({ slot: Number(m[1]), from: m[3]! });
      }
      return {
        id: id!,
        ip: hostPort.slice(0, colon),
        port: Number(hostPort.slice(colon + 1)),
        busPort: Number((rest ?? '0').split(',')[0]),
        flags,
        role: flags.includes('slave') ? 'replica' : 'master',
        ...(master && master !== '-' ? { masterId: master } : {}),
        configEpoch: Number(epoch ?? 0),
        connected: link === 'connected',
        slots,
        ...(migrating.length ? { migrating } : {}),
        ...(importing.length ? { importing } : {}),
      };
    });
}

export function slotCount(ranges: readonly SlotRange[]): number {
  return ranges.reduce((n, [lo, hi]) => n + hi - lo + 1, 0);
}

export function formatSlots(ranges: readonly SlotRange[]): string {
  return [...ranges]
    .sort((a, b) => a[0] - b[0])
    .map(([lo, hi]) => (lo === hi ? String(lo) : `${lo}-${hi}`))
    .join(',');
}

/** Inclusive slot range of master i of n, split like redis-cli does (contiguous, near-equal). */
export function slotRange(i: number, n: number): SlotRange {
  const per = CLUSTER_SLOTS / n;
  return [Math.round(i * per), Math.round((i + 1) * per) - 1];
}

/** Sorted slot numbers → ranges. */
export function toRanges(slots: readonly number[]): SlotRange[] {
  const out: [number, number][] = [];
  for (const s of slots) {
    const last = out[out.length - 1];
    if (last && s === last[1] + 1) last[1] = s;
    else out.push([s, s]);
  }
  return out;
}

/** Splits sorted slots into k near-equal contiguous chunks. */
export function splitSlots(slots: readonly number[], k: number): SlotRange[][] {
  const out: SlotRange[][] = [];
  for (let i = 0; i < k; i++) {
    const lo = Math.round((i * slots.length) / k);
    const hi = Math.round(((i + 1) * slots.length) / k);
    out.push(toRanges(slots.slice(lo, hi)));
  }
  return out;
}

const unhealthyFlags = ['fail', 'fail?', 'handshake', 'noaddr'];
export const isHealthy = (n: NodeEntry) => !n.flags.some((f) => unhealthyFlags.includes(f));
export const isFailing = (n: NodeEntry) => n.flags.includes('fail') || n.flags.includes('fail?');

/** What the reconciler saw of one pod. */
export interface PodView {
  readonly pod: string;
  readonly ordinal: number;
  readonly ip: string | undefined;
  /** Pod condition Ready. */
  readonly ready: boolean;
  /** spec.nodeName, for placement. */
  readonly k8sNode: string | undefined;
  /** Present when the operator could talk to the node. */
  readonly redis?: {
    readonly self: NodeEntry;
    /** The node's whole CLUSTER NODES, itself included. */
    readonly view: readonly NodeEntry[];
    readonly currentEpoch: number;
    readonly clusterStateOk: boolean;
  };
  /** Why the operator could not talk to a ready pod. */
  readonly error?: string;
}

export type LivePod = PodView & { readonly ip: string; readonly redis: NonNullable<PodView['redis']> };
export const isLive = (p: PodView): p is LivePod => p.ready && p.ip !== undefined && p.redis !== undefined;

export interface Shape {
  readonly masters: number;
  readonly replicasPerMaster: number;
}

/** What the previous reconcile knew (from status.nodes): pod name → node id. */
export type Memory = Readonly<Record<string, string>>;

export interface Analysis {
  readonly live: readonly LivePod[];
  /** The live node whose view is taken as the cluster's: it knows the most live nodes. */
  readonly anchor: LivePod | undefined;
  /** The anchor's view by node id. */
  readonly view: ReadonlyMap<string, NodeEntry>;
  /** Node id of each pod: its own word when live, else the last known one. */
  readonly idOfPod: ReadonlyMap<string, string>;
  readonly podOfId: ReadonlyMap<string, string>;
  /** Some node claims some slot: the cluster was formed (or formation began). */
  readonly formed: boolean;
  /** Live pods the anchor knows at their current address, healthy. */
  readonly joined: ReadonlySet<string>;
  /** Node ids known to some live node that no pod holds (excluding handshakes). */
  readonly ghosts: readonly string[];
  /** Slots nobody claims, in any live node's view. */
  readonly unclaimed: readonly number[];
  /** Masters owning slots in the anchor's view. */
  readonly owners: readonly NodeEntry[];
}

export function analyse(pods: readonly PodView[], memory: Memory = {}): Analysis {
  const live = pods.filter(isLive).sort((a, b) => a.ordinal - b.ordinal);
  const liveIds = new Set(live.map((p) => p.redis.self.id));
  const knows = (p: LivePod) =>
    live.filter((q) => {
      const e = p.redis.view.find((n) => n.id === q.redis.self.id);
      return e !== undefined && e.ip === q.ip && isHealthy(e);
    }).length;
  // Ties: the node that knows (or is meeting) more nodes, then the lowest ordinal.
  let anchor: LivePod | undefined;
  for (const p of live) {
    if (
      !anchor ||
      knows(p) > knows(anchor) ||
      (knows(p) === knows(anchor) && p.redis.view.length > anchor.redis.view.length)
    )
      anchor = p;
  }
  const view = new Map((anchor?.redis.view ?? []).map((e) => [e.id, e]));

  const idOfPod = new Map<string, string>();
  for (const p of pods) {
    if (isLive(p)) idOfPod.set(p.pod, p.redis.self.id);
    else {
      // A pod that is down keeps its node id (same data dir) unless it comes back empty.
      const byIp = p.ip
        ? [...view.values()].find((e) => e.ip === p.ip && !e.flags.includes('handshake'))
        : undefined;
      const remembered = memory[p.pod];
      const id = remembered ?? byIp?.id;
      if (id !== undefined && !liveIds.has(id)) idOfPod.set(p.pod, id);
    }
  }
  const podOfId = new Map([...idOfPod].map(([pod, id]) => [id, pod]));

  const joined = new Set<string>();
  for (const p of live) {
    const e = view.get(p.redis.self.id);
    if (e && e.ip === p.ip && isHealthy(e)) joined.add(p.pod);
  }

  const known = new Map<string, NodeEntry>();
  for (const p of live) for (const e of p.redis.view) if (!known.has(e.id)) known.set(e.id, e);
  const ghosts = [...known.values()]
    .filter((e) => !podOfId.has(e.id) && !e.flags.includes('handshake'))
    .map((e) => e.id);

  const claimed = new Uint8Array(CLUSTER_SLOTS);
  let formed = false;
  for (const p of live)
    for (const e of p.redis.view)
      for (const [lo, hi] of e.slots) {
        formed = true;
        claimed.fill(1, lo, hi + 1);
      }
  const unclaimed: number[] = [];
  if (formed) for (let s = 0; s < CLUSTER_SLOTS; s++) if (!claimed[s]) unclaimed.push(s);

  const owners = [...view.values()].filter((e) => e.role === 'master' && e.slots.length > 0);
  return { live, anchor, view, idOfPod, podOfId, formed, joined, ghosts, unclaimed, owners };
}

export type Action =
  /** CLUSTER SET-CONFIG-EPOCH on a fresh node. */
  | { readonly kind: 'setEpoch'; readonly pod: string; readonly epoch: number }
  /** CLUSTER ADDSLOTSRANGE. */
  | { readonly kind: 'addSlots'; readonly pod: string; readonly ranges: readonly SlotRange[] }
  /** CLUSTER MEET ip port busPort, sent to `pod`. */
  | {
      readonly kind: 'meet';
      readonly pod: string;
      readonly ip: string;
      readonly port: number;
      readonly busPort: number;
    }
  /** CLUSTER REPLICATE masterId, sent to `pod`. */
  | { readonly kind: 'replicate'; readonly pod: string; readonly masterId: string }
  /** CLUSTER FORGET id, sent to `pod`. */
  | { readonly kind: 'forget'; readonly pod: string; readonly id: string }
  /**
   * Moves slots with their keys from `pod` (the owner) to `targetPod`, one slot at a time:
   * SETSLOT IMPORTING on the target, MIGRATING on the source, MIGRATE the keys, SETSLOT NODE
   * on both. Every step may be repeated, so a move cut short is finished by the next one.
   */
  | {
      readonly kind: 'moveSlots';
      readonly pod: string;
      readonly sourceId: string;
      readonly targetPod: string;
      readonly targetId: string;
      readonly slots: readonly number[];
    };

export interface Plan {
  readonly actions: readonly Action[];
  /** Why the plan stops short of the declared shape (for logs and status), if it does. */
  readonly waiting?: string;
}

export interface PlanOptions {
  readonly port: number;
  readonly busPort: number;
  readonly totalPods: number;
}

/**
 * Orders candidates so that consecutive picks land on different Kubernetes nodes where
 * possible: round-robin over nodes, each node's pods by ordinal.
 */
function spreadOverNodes<T extends { ordinal: number; k8sNode: string | undefined }>(
  items: readonly T[],
): T[] {
  const byNode = new Map<string, T[]>();
  for (const it of [...items].sort((a, b) => a.ordinal - b.ordinal)) {
    const k = it.k8sNode ?? '';
    byNode.set(k, [...(byNode.get(k) ?? []), it]);
  }
  const queues = [...byNode.values()];
  const out: T[] = [];
  while (out.length < items.length) for (const q of queues) if (q.length) out.push(q.shift()!);
  return out;
}

export function plan(pods: readonly PodView[], shape: Shape, memory: Memory, opts: PlanOptions): Plan {
  const a = analyse(pods, memory);
  const { live, anchor } = a;
  if (!anchor) return { actions: [], waiting: 'no pod is ready' };

  // 1. Formation.
  if (!a.formed) {
    if (live.length < opts.totalPods)
      return {
        actions: [],
        waiting: `waiting for all ${opts.totalPods} pods to be ready before forming the cluster (${live.length} ready)`,
      };
    const ordered = spreadOverNodes(live);
    const masters = ordered.slice(0, shape.masters);
    const first = masters[0]!;
    const actions: Action[] = [];
    ordered.forEach((p, i) => {
      if (p.redis.currentEpoch === 0 && p.redis.view.length === 1)
        actions.push({ kind: 'setEpoch', pod: p.pod, epoch: i + 1 });
    });
    masters.forEach((p, i) => {
      actions.push({ kind: 'addSlots', pod: p.pod, ranges: [slotRange(i, shape.masters)] });
    });
    for (const p of ordered)
      if (p !== first && !first.redis.view.some((e) => e.id === p.redis.self.id))
        actions.push({ kind: 'meet', pod: first.pod, ip: p.ip, port: opts.port, busPort: opts.busPort });
    return { actions, waiting: 'forming the cluster' };
  }

  const actions: Action[] = [];
  const waiting: string[] = [];

  // 2a. MEET live pods the anchor does not know at their current address.
  for (const p of live) {
    if (p === anchor || a.joined.has(p.pod)) continue;
    const e = a.view.get(p.redis.self.id);
    const handshaking = anchor.redis.view.some((n) => n.flags.includes('handshake') && n.ip === p.ip);
    if (e && e.ip === p.ip && !e.flags.includes('noaddr')) {
      waiting.push(`${p.pod} is known but not healthy yet`);
      continue;
    }
    if (handshaking) {
      waiting.push(`${p.pod} is joining`);
      continue;
    }
    actions.push({ kind: 'meet', pod: anchor.pod, ip: p.ip, port: opts.port, busPort: opts.busPort });
  }

  // 2b. FORGET node ids no pod holds. Not a gone master that still owns slots while a live
  // replica can take them over (it must fail over first), and not on a replica whose master
  // it is (Redis refuses; step 4 gives that replica another master first).
  for (const id of a.ghosts) {
    const ownsSlots = (a.view.get(id)?.slots.length ?? 0) > 0;
    const replicas = live.filter((p) => p.redis.self.masterId === id);
    if (ownsSlots && replicas.length > 0) {
      waiting.push(`node ${id.slice(0, 8)} is gone, waiting for its replica to take over`);
      continue;
    }
    for (const p of live)
      if (p.redis.self.id !== id && p.redis.self.masterId !== id && p.redis.view.some((e) => e.id === id))
        actions.push({ kind: 'forget', pod: p.pod, id });
  }

  const converged = live.every((p) => a.joined.has(p.pod));
  if (!converged || actions.length > 0) {
    if (!converged) waiting.push('membership is converging');
    return { actions, waiting: waiting.join('; ') };
  }

  // A slot migration cut short (the operator stopped mid-move): finish it first.
  const half = unfinishedMoves(a);
  if (half.length) return { actions: half, waiting: 'finishing slot migrations' };

  // 3. Coverage: unclaimed slots (their owner was forgotten).
  if (a.unclaimed.length > 0) {
    const liveById = new Map(live.map((p) => [p.redis.self.id, p]));
    const empty = spreadOverNodes(
      live.filter((p) => {
        const e = a.view.get(p.redis.self.id);
        return e !== undefined && e.role === 'master' && e.slots.length === 0;
      }),
    );
    const missingOwners = Math.max(0, shape.masters - a.owners.length);
    const takers: LivePod[] = empty.slice(0, missingOwners);
    if (takers.length === 0) {
      const healthyOwners = a.owners
        .filter((o) => isHealthy(o) && liveById.has(o.id))
        .sort((x, y) => slotCount(x.slots) - slotCount(y.slots));
      if (healthyOwners[0]) takers.push(liveById.get(healthyOwners[0].id)!);
    }
    if (takers.length === 0)
      return { actions, waiting: `${a.unclaimed.length} slots have no owner and no node can take them` };
    splitSlots(a.unclaimed, takers.length).forEach((ranges, i) => {
      if (ranges.length) actions.push({ kind: 'addSlots', pod: takers[i]!.pod, ranges });
    });
    return { actions, waiting: 'assigning unowned slots' };
  }

  // 4. Replicas.
  const podByNodeId = new Map(live.map((p) => [p.redis.self.id, p]));
  const k8sNodeOf = (id: string) => {
    const pod = a.podOfId.get(id);
    return pods.find((p) => p.pod === pod)?.k8sNode;
  };
  // Masters a replica may follow: owning slots, healthy, and held by a pod.
  const validOwners = a.owners.filter((o) => isHealthy(o) && a.podOfId.has(o.id));
  const replicasOf = new Map<string, NodeEntry[]>(validOwners.map((o) => [o.id, []]));
  for (const e of a.view.values())
    if (e.role === 'replica' && e.masterId && replicasOf.has(e.masterId) && a.podOfId.has(e.id))
      replicasOf.get(e.masterId)!.push(e);
  const ordinalOf = (id: string) =>
    pods.find((p) => p.pod === a.podOfId.get(id))?.ordinal ?? Number.MAX_SAFE_INTEGER;
  /** Target master for a replica on k8sNode: fewest replicas, then another node, then ordinal. */
  const pickMaster = (k8sNode: string | undefined) =>
    [...validOwners].sort(
      (x, y) =>
        replicasOf.get(x.id)!.length - replicasOf.get(y.id)!.length ||
        Number(k8sNodeOf(x.id) === k8sNode) - Number(k8sNodeOf(y.id) === k8sNode) ||
        ordinalOf(x.id) - ordinalOf(y.id),
    )[0];

  // Nodes to (re)attach: empty masters (in the anchor's view and in their own: right after a
  // REPLICATE the anchor may lag), and orphans: replicas of a master that owns no slots and
  // is failing or gone (a replica of a master that lost its slots in a failover it missed).
  const spare = spreadOverNodes(
    live.filter((p) => {
      const e = a.view.get(p.redis.self.id);
      return (
        e?.role === 'master' &&
        e.slots.length === 0 &&
        p.redis.self.role === 'master' &&
        p.redis.self.slots.length === 0
      );
    }),
  );
  const orphans = live.filter((p) => {
    const masterId = p.redis.self.masterId;
    if (p.redis.self.role !== 'replica' || masterId === undefined) return false;
    const m = a.view.get(masterId);
    return !m || (m.slots.length === 0 && (!isHealthy(m) || !a.podOfId.has(masterId)));
  });
  const failingOwner = a.owners.find((o) => !isHealthy(o) || !a.podOfId.has(o.id));
  const attach = [...orphans, ...spare];
  if (attach.length > 0 && failingOwner) {
    // Its replica is about to take over and will need a replica itself: attach after that.
    waiting.push(
      `master ${a.podOfId.get(failingOwner.id) ?? failingOwner.id.slice(0, 8)} is failing or gone; waiting for the failover`,
    );
  } else if (a.owners.length < shape.masters && spare.length > 0) {
    // Scale-out: the new masters take their share of the slots before anyone replicates them.
    const moves = balance(a, spare.slice(0, shape.masters - a.owners.length), shape.masters);
    actions.push(...moves);
    waiting.push(`moving slots onto ${shape.masters - a.owners.length} new masters`);
  } else {
    for (const p of attach) {
      const target = pickMaster(p.k8sNode);
      if (!target) break;
      // (When every master already has its replicas, an extra node still serves best as one more.)
      const knowsTarget = p.redis.view.some((e) => e.id === target.id && isHealthy(e));
      if (!knowsTarget) {
        waiting.push(`${p.pod} does not know its master yet`);
        continue;
      }
      actions.push({ kind: 'replicate', pod: p.pod, masterId: target.id });
      replicasOf
        .get(target.id)!
        .push({ ...(a.view.get(p.redis.self.id) ?? p.redis.self), role: 'replica', masterId: target.id });
    }
  }

  // Balance: a master added by a scale-out that holds less than its share keeps receiving slots.
  if (actions.length === 0 && attach.length === 0 && !failingOwner && a.owners.length === shape.masters) {
    const moves = balance(a, [], shape.masters);
    if (moves.length) {
      actions.push(...moves);
      waiting.push('moving slots to balance the masters');
    }
  }

  // Move one replica from a master with too many to one with too few, when all is calm.
  const calm =
    actions.length === 0 &&
    attach.length === 0 &&
    live.length === opts.totalPods &&
    [...a.view.values()].every(isHealthy);
  if (calm) {
    const under = validOwners.filter((o) => replicasOf.get(o.id)!.length < shape.replicasPerMaster);
    const over = validOwners.filter((o) => replicasOf.get(o.id)!.length > shape.replicasPerMaster);
    const to = under.sort((x, y) => ordinalOf(x.id) - ordinalOf(y.id))[0];
    const from = over.sort((x, y) => replicasOf.get(y.id)!.length - replicasOf.get(x.id)!.length)[0];
    if (to && from) {
      const candidates = replicasOf
        .get(from.id)!
        .filter((r) => podByNodeId.has(r.id))
        .sort(
          (x, y) =>
            Number(k8sNodeOf(x.id) === k8sNodeOf(to.id)) - Number(k8sNodeOf(y.id) === k8sNodeOf(to.id)) ||
            ordinalOf(y.id) - ordinalOf(x.id),
        );
      const r = candidates[0];
      if (r) actions.push({ kind: 'replicate', pod: podByNodeId.get(r.id)!.pod, masterId: to.id });
    }
  }
  return { actions, ...(waiting.length ? { waiting: waiting.join('; ') } : {}) };
}

/**
 * Slot moves that bring every master (the owners plus `newMasters`) to within 1% of an even
 * share (redis-cli's rebalance threshold is 2%), at most MOVE_BATCH slots per call: each
 * under-filled master takes the highest slots of the most over-filled owners.
 */
export function balance(a: Analysis, newMasters: readonly LivePod[], masters: number): Action[] {
  const podOf = (id: string) => a.live.find((p) => p.redis.self.id === id);
  const members = [
    ...a.owners.map((o) => ({ id: o.id, pod: podOf(o.id), slots: expand(o.slots) })),
    ...newMasters.map((p) => ({ id: p.redis.self.id, pod: p as LivePod | undefined, slots: [] as number[] })),
  ].filter((m): m is { id: string; pod: LivePod; slots: number[] } => m.pod !== undefined);
  if (members.length === 0 || members.length > masters) return [];
  const fair = CLUSTER_SLOTS / members.length;
  const tolerance = Math.max(1, Math.floor(fair * 0.01));
  const under = members.filter((m) => fair - m.slots.length > tolerance);
  if (under.length === 0) return [];
  const donors = members
    .filter((m) => m.slots.length > Math.ceil(fair))
    .sort((x, y) => y.slots.length - x.slots.length);
  const actions: Action[] = [];
  let budget = MOVE_BATCH;
  for (const to of under) {
    let need = Math.floor(fair) - to.slots.length;
    for (const from of donors) {
      if (need <= 0 || budget <= 0) break;
      const spare = from.slots.length - Math.ceil(fair);
      const n = Math.min(spare, need, budget);
      if (n <= 0) continue;
      const moved = from.slots.splice(from.slots.length - n, n);
      to.slots.push(...moved);
      need -= n;
      budget -= n;
      actions.push({
        kind: 'moveSlots',
        pod: from.pod.pod,
        sourceId: from.id,
        targetPod: to.pod.pod,
        targetId: to.id,
        slots: moved,
      });
    }
  }
  return actions;
}

/** Migrations a node reports as in progress, as moves to finish (source side, then target side). */
function unfinishedMoves(a: Analysis): Action[] {
  const byId = new Map(a.live.map((p) => [p.redis.self.id, p]));
  const moves = new Map<string, { source: LivePod; target: LivePod; slots: Set<number> }>();
  const add = (sourceId: string, targetId: string, slot: number) => {
    const source = byId.get(sourceId);
    const target = byId.get(targetId);
    if (!source || !target) return;
    const key = `${sourceId}>${targetId}`;
    const m = moves.get(key) ?? { source, target, slots: new Set<number>() };
    m.slots.add(slot);
    moves.set(key, m);
  };
  for (const p of a.live) {
    for (const m of p.redis.self.migrating ?? []) add(p.redis.self.id, m.to, m.slot);
    for (const m of p.redis.self.importing ?? []) add(m.from, p.redis.self.id, m.slot);
  }
  return [...moves.values()].map((m) => ({
    kind: 'moveSlots',
    pod: m.source.pod,
    sourceId: m.source.redis.self.id,
    targetPod: m.target.pod,
    targetId: m.target.redis.self.id,
    slots: [...m.slots].sort((x, y) => x - y),
  }));
}

function expand(ranges: readonly SlotRange[]): number[] {
  const out: number[] = [];
  for (const [lo, hi] of [...ranges].sort((x, y) => x[0] - y[0])) for (let s = lo; s <= hi; s++) out.push(s);
  return out;
}
