import type { KubeConfig } from '@kubernetes/client-node';

/**
 * The one way both programs find their API server: the kubeconfig file named by a setting,
 * else client-node's default chain (KUBECONFIG, ~/.kube/config, the in-cluster
 * ServiceAccount). @kubernetes/client-node is imported here, on demand, because loading it
 * costs about 75 MB of resident memory that a standalone sidecar should not pay.
 */
export async function loadKubeConfig(kubeconfigPath?: string): Promise<KubeConfig> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  if (kubeconfigPath) kc.loadFromFile(kubeconfigPath);
  else kc.loadFromDefault();
  return kc;
}

/** `a, b,,c` → ['a', 'b', 'c']: a comma-separated namespace list; empty means all namespaces. */
export function parseNamespaces(list: string): string[] {
  return list
    .split(',')
    .map((n) => n.trim())
    .filter((n) => n !== '');
}
