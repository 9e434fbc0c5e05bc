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
    // Loaded only in this mode: @kubernetes/client-node alone costs ~75 MB of resident memory.
    const [{ KubeConfig }, { KubeSource }] = await Promise.all([
      import('@kubernetes/client-node'),
      import('./kubeSource.js'),
    ]);
    const kubeConfig = new KubeConfig();
    if (settings.kubeconfig) kubeConfig.loadFromFile(settings.kubeconfig);
    else kubeConfig.loadFromDefault();
    const namespaces = settings.watchNamespaces
      .split(',')
      .map((n) => n.trim())
      .filter((n) => n !== '');
    return new KubeSource({ kubeConfig, kinds: sidecarKinds, namespaces, log, registry });
  }
  if (!settings.policyPath) return undefined;
  return new FileSource({ path: settings.policyPath, kinds: sidecarKinds, log, registry });
}
