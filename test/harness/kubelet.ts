import type { KubeConfig } from '@kubernetes/client-node';
import { createNamespace, installCrds } from './crds.js';
import { type Kube, startKube } from './kube.js';
import { kubeRequest } from './kubeHttp.js';
import { type Kubelet, startKubelet } from './kubelet/index.js';

/**
 * The kubelet stand-in (see kubelet/index.ts): this module keeps its import path.
 */
export {
  expandVars,
  type Kubelet,
  type KubeletOptions,
  type KubeletPod,
  startKubelet,
} from './kubelet/index.js';

export interface NodeCluster {
  kube: Kube;
  kc: KubeConfig;
  kubelet: Kubelet;
}

/**
 * What the operator tests run against: kube-apiserver with kube-controller-manager, the
 * Nox CRDs, namespace `ns`, and one node (`node-a`) run by the kubelet stand-in.
 */
export async function startNodeCluster(ns: string): Promise<NodeCluster> {
  const kube = await startKube({ controllerManager: true });
  const kc = kube.kubeConfig();
  await installCrds(kc);
  await createNamespace(kc, ns);
  const kubelet = await startKubelet(kube, { nodeName: 'node-a' });
  return { kube, kc, kubelet };
}

/** Creates a nox.dev/v1alpha1 object (POST); fails unless the API server answers 201. */
export async function createNoxObject(
  kc: KubeConfig,
  plural: string,
  obj: { kind: string; metadata: { name: string; namespace: string }; spec: unknown },
): Promise<void> {
  const path = `/apis/nox.dev/v1alpha1/namespaces/${obj.metadata.namespace}/${plural}`;
  const res = await kubeRequest(kc, 'POST', path, {
    body: JSON.stringify({ apiVersion: 'nox.dev/v1alpha1', ...obj }),
  });
  if (res.status !== 201)
    throw new Error(`create ${obj.kind} ${obj.metadata.name}: ${res.status} ${JSON.stringify(res.body)}`);
}
