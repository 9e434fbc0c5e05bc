import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { type ModelStore, noModelStore } from '../risk/modelStore.js';
import type { Kube } from './kube.js';

/** Model ConfigMaps through the API server in kubernetes mode; standalone, models are files. */
export async function modelStoreFor(
  kube: Kube | undefined,
  log: Logger,
  registry: Registry,
): Promise<ModelStore> {
  if (!kube) return noModelStore;
  const { KubeModelStore } = await import('../risk/kubeModelStore.js');
  return new KubeModelStore({ client: kube.client, namespaces: kube.namespaces, log, registry });
}
