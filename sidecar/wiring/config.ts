import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { sidecarKinds } from '../config/kinds.js';
import type { ConfigSource } from '../config/source.js';
import type { Settings } from '../settings/settings.js';
import type { Kube } from './kube.js';

/** Where policies come from: list + watch through the API server, or files; undefined: nowhere (never ready). */
export async function configSourceFor(
  settings: Settings,
  kube: Kube | undefined,
  log: Logger,
  registry: Registry,
): Promise<ConfigSource | undefined> {
  if (kube) {
    const { KubeSource } = await import('../config/kubeSource.js');
    return new KubeSource({
      client: kube.client,
      kinds: sidecarKinds,
      namespaces: kube.namespaces,
      log,
      registry,
    });
  }
  if (!settings.policyPath) return undefined;
  const { FileSource } = await import('../config/fileSource.js');
  return new FileSource({ path: settings.policyPath, kinds: sidecarKinds, log, registry });
}
