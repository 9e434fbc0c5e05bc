import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeClient } from '../../common/kube/client.js';
import type { Settings } from '../settings/settings.js';

/** The sidecar's one connection to the API server: the policy source, the Secret store and TokenReview share it. */
export interface Kube {
  readonly config: KubeConfig;
  readonly client: KubeClient;
  /** The namespaces whose policies and Secrets apply; empty: all of them. */
  readonly namespaces: readonly string[];
}

/** undefined unless NOX_CONFIG_SOURCE=kubernetes: standalone never loads @kubernetes/client-node (~75 MB resident). */
export async function kubeFor(settings: Settings): Promise<Kube | undefined> {
  if (settings.configSource !== 'kubernetes') return undefined;
  const [{ KubeClient }, { loadKubeConfig, parseNamespaces }] = await Promise.all([
    import('../../common/kube/client.js'),
    import('../../common/kube/config.js'),
  ]);
  const config = await loadKubeConfig(settings.kubeconfig || undefined);
  return { config, client: new KubeClient(config), namespaces: parseNamespaces(settings.watchNamespaces) };
}
