import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { group, version } from '../../common/resources/kind.js';
import { policyKinds } from '../../common/resources/kinds/index.js';
import type { Settings } from '../settings/settings.js';
import { FileSource } from './fileSource.js';
import type { ConfigSource, ResourceKind } from './source.js';

/** The nox.dev kinds the sidecar enforces (the cluster kinds are the operator's). */
export const sidecarKinds: readonly ResourceKind[] = policyKinds.map((k) => ({
  group,
  version,
  kind: k.kind,
  plural: k.plural,
}));

export async function configSourceFor(
  settings: Settings,
  log: Logger,
  registry: Registry,
): Promise<ConfigSource | undefined> {
  if (settings.configSource === 'kubernetes') {
    const [{ KubeClient }, { loadKubeConfig, parseNamespaces }, { KubeSource }] = await Promise.all([
      import('../../common/kube/client.js'),
      import('../../common/kube/config.js'),
      import('./kubeSource.js'),
    ]);
    const client = new KubeClient(await loadKubeConfig(settings.kubeconfig || undefined));
    const namespaces = parseNamespaces(settings.watchNamespaces);
    return new KubeSource({ client, kinds: sidecarKinds, namespaces, log, registry });
  }
  if (!settings.policyPath) return undefined;
  return new FileSource({ path: settings.policyPath, kinds: sidecarKinds, log, registry });
}
