import type { KubernetesObject } from '@kubernetes/client-node';
import { groupOf, type KubeClient, type KubeObject, type ResourceType } from '../../common/kube/client.js';
import { builtinTypes } from '../../common/kube/resources.js';
import { type Applier, fieldManager, type ObjectKey } from './types.js';

/**
 * apiVersion + kind → resource (plural, scope): the known types first, then the API
 * server's discovery document of the group/version (cached).
 */
export class RestMapper {
  readonly #known = new Map<string, ResourceType>();
  readonly #discovered = new Map<string, Promise<Map<string, ResourceType>>>();

  constructor(
    private readonly client: KubeClient,
    known: readonly ResourceType[] = builtinTypes,
  ) {
    for (const t of known) this.#known.set(`${t.group}/${t.version}/${t.kind}`, t);
  }

  async resourceFor(apiVersion: string, kind: string): Promise<ResourceType> {
    const group = groupOf(apiVersion);
    const version = group ? apiVersion.slice(group.length + 1) : apiVersion;
    const known = this.#known.get(`${group}/${version}/${kind}`);
    if (known) return known;
    let pending = this.#discovered.get(apiVersion);
    if (!pending) {
      pending = this.#discover(group, version);
      this.#discovered.set(apiVersion, pending);
      pending.catch(() => this.#discovered.delete(apiVersion));
    }
    const found = (await pending).get(kind);
    if (!found) {
      this.#discovered.delete(apiVersion); // maybe a CRD installed since
      throw new Error(`the API server does not serve kind ${kind} in ${apiVersion}`);
    }
    return found;
  }

  async #discover(group: string, version: string): Promise<Map<string, ResourceType>> {
    const doc = await this.client.request<{
      resources?: { name: string; kind: string; namespaced: boolean }[];
    }>('GET', group ? `/apis/${group}/${version}` : `/api/${version}`);
    const out = new Map<string, ResourceType>();
    for (const r of doc.resources ?? []) {
      if (r.name.includes('/')) continue; // subresources
      out.set(r.kind, { group, version, kind: r.kind, plural: r.name, namespaced: r.namespaced });
    }
    return out;
  }
}

/**
 * Server-side apply under one field manager ("nox-operator", force): an object is sent
 * whole as the operator wants it, and the API server merges it with what other managers
 * own. Status goes to the status subresource the same way, sending only `status`.
 */
export class KubeApplier implements Applier {
  readonly manager = fieldManager;

  constructor(
    private readonly client: KubeClient,
    private readonly mapper: RestMapper = new RestMapper(client),
  ) {}

  async apply<T extends KubernetesObject>(obj: T): Promise<T> {
    const r = await this.#resource(obj);
    return (await this.client.apply(r, obj as unknown as KubeObject)) as unknown as T;
  }

  async applyStatus<T extends KubernetesObject>(obj: T): Promise<void> {
    const r = await this.#resource(obj);
    const meta = obj.metadata ?? {};
    const status = (obj as { status?: unknown }).status;
    await this.client.apply(
      r,
      {
        metadata: { name: meta.name ?? '', ...(meta.namespace ? { namespace: meta.namespace } : {}) },
        status,
      } as KubeObject,
      { subresource: 'status' },
    );
  }

  async delete(apiVersion: string, kind: string, key: ObjectKey): Promise<void> {
    const r = await this.mapper.resourceFor(apiVersion, kind);
    await this.client.delete(r, key);
  }

  async #resource(obj: KubernetesObject): Promise<ResourceType> {
    if (!obj.apiVersion || !obj.kind || !obj.metadata?.name)
      throw new Error('server-side apply needs apiVersion, kind and metadata.name');
    return this.mapper.resourceFor(obj.apiVersion, obj.kind);
  }
}
