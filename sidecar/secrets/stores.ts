import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import type { Settings } from '../settings/settings.js';
import type { SecretStore } from './secretStore.js';

/** A store with no Secrets: standalone without NOX_SECRETS_DIR. Everything that needs one fails closed. */
class NoSecrets implements SecretStore {
  get(): Buffer | undefined {
    return undefined;
  }
  select(): ReadonlyMap<string, Readonly<Record<string, Buffer>>> {
    return new Map();
  }
  onChange(): void {}
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
}

export async function secretStoreFor(
  settings: Settings,
  log: Logger,
  registry: Registry,
): Promise<SecretStore> {
  if (settings.configSource === 'kubernetes') {
    const [{ KubeClient }, { loadKubeConfig, parseNamespaces }, { KubeSecretStore }] = await Promise.all([
      import('../../common/kube/client.js'),
      import('../../common/kube/config.js'),
      import('./kubeSecretStore.js'),
    ]);
    const client = new KubeClient(await loadKubeConfig(settings.kubeconfig || undefined));
    const namespaces = parseNamespaces(settings.watchNamespaces);
    return new KubeSecretStore({ client, namespaces, log, registry });
  }
  if (settings.secretsDir)
    return new (await import('./dirSecretStore.js')).DirSecretStore({ dir: settings.secretsDir, log });
  return new NoSecrets();
}
