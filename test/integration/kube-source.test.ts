import { ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient } from '../../common/kube/client.js';
import { createLogger } from '../../common/logger.js';
import { KubeSource, type KubeSourceOptions } from '../../sidecar/config/kubeSource.js';
import type { ResourceKind, SourceState } from '../../sidecar/config/source.js';
import { apiServerRefuses, base64, etcdRequest, type Kube, startKube } from '../harness/kube.js';
import { testLog } from '../harness/log.js';
import { waitUntil } from '../harness/process.js';
import { metricSum } from '../harness/registry.js';
import { StateRecorder } from '../harness/sourceStates.js';

const log = createLogger('kube-source-test', { level: process.env.NOX_LOG_LEVEL ?? 'silent' });
const GROUP = 'test.nox.dev';
const widget: ResourceKind = { group: GROUP, version: 'v1', kind: 'Widget', plural: 'widgets' };
const gadget: ResourceKind = { group: GROUP, version: 'v1', kind: 'Gadget', plural: 'gadgets' };

const names = (s: SourceState) => s.resources.map((r) => `${r.metadata.namespace}/${r.metadata.name}`).sort();
const specOf = (s: SourceState, ns: string, name: string) =>
  s.resources.find((r) => r.metadata.namespace === ns && r.metadata.name === name)?.spec as
    | Record<string, unknown>
    | undefined;

describe('KubeSource against a real kube-apiserver', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let custom: CustomObjectsApi;
  const sources: KubeSource[] = [];

  const installCrd = async (kind: ResourceKind) => {
    const ext = kc.makeApiClient(ApiextensionsV1Api);
    const name = `${kind.plural}.${kind.group}`;
    await ext.createCustomResourceDefinition({
      body: {
        metadata: { name },
        spec: {
          group: kind.group,
          scope: 'Namespaced',
          names: { plural: kind.plural, kind: kind.kind, singular: kind.kind.toLowerCase() },
          versions: [
            {
              name: kind.version,
              served: true,
              storage: true,
              schema: {
                openAPIV3Schema: {
                  type: 'object',
                  properties: { spec: { type: 'object', x_kubernetes_preserve_unknown_fields: true } },
                },
              },
            },
          ],
        },
      },
    });
    await waitUntil(
      `CRD ${name} Established`,
      async () =>
        (await ext.readCustomResourceDefinition({ name })).status?.conditions?.some(
          (c) => c.type === 'Established' && c.status === 'True',
        ) ?? false,
      30_000,
    );
  };

  const create = (namespace: string, name: string, spec: Record<string, unknown>) =>
    custom.createNamespacedCustomObject({
      group: GROUP,
      version: 'v1',
      plural: 'widgets',
      namespace,
      body: { apiVersion: `${GROUP}/v1`, kind: 'Widget', metadata: { name }, spec },
    });
  const replaceSpec = async (namespace: string, name: string, spec: Record<string, unknown>) => {
    const key = { group: GROUP, version: 'v1', plural: 'widgets', namespace, name };
    const current = (await custom.getNamespacedCustomObject(key)) as Record<string, unknown>;
    await custom.replaceNamespacedCustomObject({ ...key, body: { ...current, spec } });
  };
  const remove = (namespace: string, name: string) =>
    custom.deleteNamespacedCustomObject({ group: GROUP, version: 'v1', plural: 'widgets', namespace, name });

  const startSource = async (opts: Partial<KubeSourceOptions> = {}) => {
    const registry = new Registry();
    const rec = new StateRecorder();
    const source = new KubeSource({
      client: new KubeClient(kc),
      kinds: [widget],
      namespaces: ['served-a', 'served-b'],
      log,
      registry,
      backoff: { initialMs: 100, maxMs: 1000 },
      ...opts,
    });
    sources.push(source);
    await source.start(rec.onState);
    return { source, rec, registry };
  };

  beforeAll(async () => {
    kube = await startKube();
    kc = kube.kubeConfig();
    custom = kc.makeApiClient(CustomObjectsApi);
    const core = kc.makeApiClient(CoreV1Api);
    for (const name of ['served-a', 'served-b', 'elsewhere']) {
      await core.createNamespace({ body: { metadata: { name } } });
    }
    await installCrd(widget);
    // Established can come a moment before the resource is served.
    await waitUntil(
      'widgets served',
      async () => {
        await create('served-a', 'pre-a', { size: 1 });
        return true;
      },
      10_000,
    );
    await create('served-b', 'pre-b', { size: 1 });
    await create('elsewhere', 'pre-x', { size: 1 });
  });
  afterAll(async () => {
    await Promise.all(sources.map((s) => s.stop()));
    await kube?.stop();
  });

  it('delivers the initial list of the namespaces it serves', async () => {
    const { source, rec, registry } = await startSource();
    expect(rec.states).toHaveLength(1);
    expect(names(rec.last)).toEqual(['served-a/pre-a', 'served-b/pre-b']);
    const preA = rec.last.resources.find((r) => r.metadata.name === 'pre-a');
    expect(preA).toMatchObject({
      apiVersion: `${GROUP}/v1`,
      kind: 'Widget',
      metadata: { name: 'pre-a', namespace: 'served-a', generation: 1 },
      spec: { size: 1 },
      origin: 'k8s',
    });
    expect(preA?.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(preA?.metadata.resourceVersion).toMatch(/^\d+$/);
    expect(rec.last.problems).toEqual([]);
    expect(source.healthy()).toBe(true);
    expect(await metricSum(registry, 'nox_config_watch_healthy', { kind: 'Widget' })).toBe(1);
    expect(await metricSum(registry, 'nox_config_objects', { kind: 'Widget' })).toBe(2);
  });

  it('delivers a create, a change and a delete within 2 s each, and nothing from other namespaces', async () => {
    const { rec } = await startSource();
    await create('served-a', 'w1', { size: 1 });
    const created = await rec.waitFor((s) => names(s).includes('served-a/w1'), 2000);

    await replaceSpec('served-a', 'w1', { size: 2 });
    const changed = await rec.waitFor((s) => specOf(s, 'served-a', 'w1')?.size === 2, 2000);
    expect(changed.state.resources.find((r) => r.metadata.name === 'w1')?.metadata.generation).toBe(2);

    await remove('served-a', 'w1');
    const deleted = await rec.waitFor((s) => !names(s).includes('served-a/w1'), 2000);
    testLog(`delivered: create ${created.ms} ms, change ${changed.ms} ms, delete ${deleted.ms} ms`);

    await create('elsewhere', 'x1', {});
    await create('served-b', 'marker', {});
    await rec.waitFor((s) => names(s).includes('served-b/marker'), 2000);
    expect(rec.states.flatMap(names).filter((n) => n.startsWith('elsewhere/'))).toEqual([]);

    // The same kind over all namespaces sees them.
    const everywhere = await startSource({ namespaces: [] });
    expect(names(everywhere.rec.last)).toEqual([
      'elsewhere/pre-x',
      'elsewhere/x1',
      'served-a/pre-a',
      'served-b/marker',
      'served-b/pre-b',
    ]);
  });

  it('survives an API server restart: unhealthy while it is down, healthy after, still watching', async () => {
    const { source, rec, registry } = await startSource();
    const mark = rec.states.length;
    const health = [source.healthy()];
    const poll = setInterval(() => {
      if (health.at(-1) !== source.healthy()) health.push(source.healthy());
    }, 10);
    const t0 = Date.now();
    await kube.restartApiServer();
    await waitUntil('the source to be healthy again', async () => source.healthy(), 30_000);
    clearInterval(poll);
    testLog(`apiserver restarted and source healthy again after ${Date.now() - t0} ms`);
    testLog(`health seen during the restart: ${health.join(' → ')}`);
    expect(health[0]).toBe(true);
    expect(health).toContain(false);
    expect(health.at(-1)).toBe(true);
    expect(await metricSum(registry, 'nox_config_watch_healthy', { kind: 'Widget' })).toBe(1);
    expect(
      await metricSum(registry, 'nox_config_watch_restarts_total', { kind: 'Widget', reason: 'error' }),
    ).toBeGreaterThan(0);
    // It kept serving what it knew, and a change made now still arrives: the watch is back.
    expect(rec.states.slice(mark - 1).every((s) => names(s).includes('served-a/pre-a'))).toBe(true);
    await replaceSpec('served-a', 'pre-a', { size: 7 });
    const after = await rec.waitFor((s) => specOf(s, 'served-a', 'pre-a')?.size === 7, 2000);
    testLog(`change after restart delivered in ${after.ms} ms`);
  });

  it('relists on 410 Gone and so sees what changed while it could not watch', async () => {
    await create('served-a', 'keep', {});
    await create('served-a', 'gone', {});
    await create('served-a', 'edit', { v: 1 });
    const { source, rec, registry } = await startSource();
    const expiredBefore = await metricSum(registry, 'nox_config_watch_restarts_total', { reason: 'expired' });

    // While no API server runs, change the objects in etcd itself and compact its history: the
    // resourceVersion the source holds is then gone, and only a relist can show the changes.
    const mark = rec.states.length;
    const t0 = Date.now();
    // The API server stays down while etcd is changed behind its back.
    await kube.restartApiServer(async () => {
      expect(await apiServerRefuses(kube)).toBe(true);
      await waitUntil('the source to notice the outage', () => !source.healthy(), 30_000, { intervalMs: 5 });
      const prefix = '/registry/test.nox.dev/widgets/served-a/';
      await etcdRequest(kube, 'kv/deleterange', { key: base64(`${prefix}gone`) });
      const [kv] = (await etcdRequest(kube, 'kv/range', { key: base64(`${prefix}edit`) })).kvs as {
        value: string;
      }[];
      const stored = JSON.parse(Buffer.from(kv?.value ?? '', 'base64').toString()) as Record<string, unknown>;
      const put = await etcdRequest(kube, 'kv/put', {
        key: base64(`${prefix}edit`),
        value: base64(JSON.stringify({ ...stored, spec: { v: 2 } })),
      });
      const revision = (put.header as { revision: string }).revision;
      await etcdRequest(kube, 'kv/compaction', { revision, physical: true });
    });

    const { state } = await rec.waitFor(
      (s) => !names(s).includes('served-a/gone') && specOf(s, 'served-a', 'edit')?.v === 2,
      30_000,
      mark,
    );
    testLog(`state after compaction and relist delivered ${Date.now() - t0} ms after the restart began`);
    expect(names(state)).toEqual(expect.arrayContaining(['served-a/keep', 'served-a/edit']));
    expect(
      await metricSum(registry, 'nox_config_watch_restarts_total', { reason: 'expired' }),
    ).toBeGreaterThan(expiredBefore);
    await create('served-a', 'after-relist', {});
    await rec.waitFor((s) => names(s).includes('served-a/after-relist'), 2000);
    expect(source.healthy()).toBe(true);
  });

  it('start() waits, retrying, for a kind whose CRD appears later', async () => {
    const registry = new Registry();
    const pending = startSource({ kinds: [widget, gadget], startTimeoutMs: 30_000, registry });
    // The CRD appears only once the source has tried (and failed) to list Gadgets.
    const listFailures = () =>
      metricSum(registry, 'nox_config_watch_restarts_total', { kind: 'Gadget', reason: 'error' });
    await waitUntil('a failed list of Gadgets', async () => (await listFailures()) > 0, 20_000, {
      intervalMs: 20,
    });
    await installCrd(gadget);
    const { source, rec } = await pending;
    expect(source.healthy()).toBe(true);
    expect(rec.states).toHaveLength(1);
    expect(
      await metricSum(registry, 'nox_config_watch_restarts_total', { kind: 'Gadget', reason: 'error' }),
    ).toBeGreaterThan(0);
    expect(await metricSum(registry, 'nox_config_objects', { kind: 'Gadget' })).toBe(0);
  });

  it('start() rejects after startTimeoutMs when a kind is never served', async () => {
    const never: ResourceKind = { group: GROUP, version: 'v1', kind: 'Never', plural: 'nevers' };
    const t0 = Date.now();
    await expect(startSource({ kinds: [never], startTimeoutMs: 1500 })).rejects.toThrow(
      /nevers\.test\.nox\.dev in served-a: HTTP 404/,
    );
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(sources.at(-1)?.healthy()).toBe(false);
  });
});
