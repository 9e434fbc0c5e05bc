import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execute, type NodeAccess } from '../../operator/redis/nodes.js';
import { type Action, parseClusterNodes } from '../../operator/redis/topology.js';
import { freePorts } from '../harness/ports.js';
import { waitUntil } from '../harness/process.js';
import { type RedisServer, startRedis, withProbe } from '../harness/redis.js';

/**
 * The operator's slot move (operator/redis/nodes.ts) against two real cluster nodes laid out
 * like pods: one port, one address each. The case that once stalled a scale-out for good: the
 * new master was set IMPORTING before it had learned who owns the slot, and a node importing a
 * slot ignores what gossip says about its owner, so every MIGRATE failed with "CLUSTERDOWN Hash
 * slot not served" on every retry.
 */
describe('moving a hash slot between real Redis cluster nodes', () => {
  const password = 'slot-move-test';
  // A third octet of our own, so that a parallel kubelet stand-in's 127.0.n.m pods do not collide.
  const net = `127.0.${200 + (process.pid % 50)}`;
  const hosts = { a: `${net}.2`, b: `${net}.3` };
  let port = 0;
  let access: NodeAccess;
  const servers: RedisServer[] = [];
  const ids: Record<'a' | 'b', string> = { a: '', b: '' };
  // Every key shares one hash tag, so one slot; which slot, Redis says (CLUSTER KEYSLOT).
  const tag = '{slot-move}';
  let slot = 0;
  const keys: string[] = [];

  const node = (pod: 'a' | 'b') => new Redis({ host: hosts[pod], port, password, lazyConnect: true });
  const onNode = <T>(pod: 'a' | 'b', fn: (c: Redis) => Promise<T>) =>
    withProbe(port, password, fn, hosts[pod]);
  const viewOf = async (pod: 'a' | 'b') =>
    parseClusterNodes(String(await onNode(pod, (c) => c.call('CLUSTER', 'NODES'))));
  const ownerIn = async (pod: 'a' | 'b') =>
    (await viewOf(pod)).find((e) => e.slots.some(([lo, hi]) => lo <= slot && slot <= hi))?.id;
  const move = (): Action => ({
    kind: 'moveSlots',
    pod: 'a',
    sourceId: ids.a,
    targetPod: 'b',
    targetId: ids.b,
    slots: [slot],
  });

  beforeAll(async () => {
    port = (await freePorts(1, { busOffset: 10000 }))[0]!;
    access = { password, port };
    for (const pod of ['a', 'b'] as const)
      servers.push(
        await startRedis({
          host: hosts[pod],
          port,
          password,
          name: `redis-slot-move-${pod}`,
          extraArgs: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            'nodes.conf',
            '--cluster-node-timeout',
            '3000',
            '--masterauth',
            password,
            '--bind-source-addr',
            hosts[pod],
          ],
        }),
      );
    for (const pod of ['a', 'b'] as const)
      ids[pod] = String(await onNode(pod, (c) => c.call('CLUSTER', 'MYID')));
    await onNode('a', async (c) => {
      await c.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
      await c.call('CLUSTER', 'MEET', hosts.b, String(port));
    });
    const stateOk = async (pod: 'a' | 'b') =>
      /^cluster_state:ok\r?$/m.test(String(await onNode(pod, (c) => c.call('CLUSTER', 'INFO'))));
    await waitUntil(
      'both nodes to see a as the owner of every slot, cluster state ok',
      async () => (await ownerIn('b')) === ids.a && (await stateOk('a')) && (await stateOk('b')),
      30_000,
    );
    const a = node('a');
    await a.connect();
    slot = Number(await a.call('CLUSTER', 'KEYSLOT', tag));
    for (let i = 0; i < 20; i++) {
      const key = `quota:${tag}:${i}`;
      await a.set(key, String(i));
      keys.push(key);
    }
    a.disconnect();
  }, 120_000);

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  it('finishes a move whose target was importing before it knew the owner, keys and values intact', async () => {
    // The stalled state: b imports the slot and has no owner for it (as a freshly met node does
    // before gossip tells it); importing keeps gossip from filling that in.
    await onNode('b', async (c) => {
      await c.call('CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', ids.a);
      await c.call('CLUSTER', 'DELSLOTS', String(slot));
    });
    expect(await ownerIn('b')).toBeUndefined();

    // Each reconcile runs the move again, as the operator does, until one gets through.
    const errors: string[] = [];
    await waitUntil(
      'the slot move to succeed',
      async () => {
        const r = await execute([move()], (pod) => hosts[pod as 'a' | 'b'], access);
        errors.push(...r.failed.map((f) => f.error));
        return r.done.length === 1;
      },
      30_000,
      { intervalMs: 500 },
    );
    // The first attempt says why it waits instead of sending keys to a node that refuses them.
    expect(errors[0]).toContain(`b does not see slot ${slot} as a's yet`);
    expect(errors.join('\n')).not.toMatch(/CLUSTERDOWN/);

    await waitUntil(
      'both nodes to agree that b owns the slot',
      async () => (await ownerIn('a')) === ids.b && (await ownerIn('b')) === ids.b,
      30_000,
    );
    for (const pod of ['a', 'b'] as const) {
      const self = (await viewOf(pod)).find((e) => e.flags.includes('myself'))!;
      expect(self.importing ?? [], `${pod} importing`).toEqual([]);
      expect(self.migrating ?? [], `${pod} migrating`).toEqual([]);
    }
    expect(Number(await onNode('b', (c) => c.call('CLUSTER', 'COUNTKEYSINSLOT', String(slot))))).toBe(
      keys.length,
    );
    expect(Number(await onNode('a', (c) => c.call('CLUSTER', 'COUNTKEYSINSLOT', String(slot))))).toBe(0);
    const b = node('b');
    await b.connect();
    try {
      const values = await Promise.all(keys.map((k) => b.get(k)));
      expect(values).toEqual(keys.map((_, i) => String(i)));
    } finally {
      b.disconnect();
    }
  }, 90_000);
});
