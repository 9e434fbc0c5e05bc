import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { NoSecrets } from '../secrets/noSecrets.js';
import type { SecretStore } from '../secrets/secretStore.js';
import type { Settings } from '../settings/settings.js';
import type { Kube } from './kube.js';

/** Secrets through the API server in kubernetes mode, else from NOX_SECRETS_DIR, else none. */
export async function secretStoreFor(
  settings: Settings,
  kube: Kube | undefined,
  log: Logger,
  registry: Registry,
): Promise<SecretStore> {
  if (kube) {
    const { KubeSecretStore } = await import('../secrets/kubeSecretStore.js');
    return new KubeSecretStore({ client: kube.client, namespaces: kube.namespaces, log, registry });
  }
  if (settings.secretsDir)
    return new (await import('../secrets/dirSecretStore.js')).DirSecretStore({
      dir: settings.secretsDir,
      log,
    });
  return new NoSecrets();
}
