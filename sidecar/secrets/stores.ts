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
    const [{ KubeConfig }, { KubeSecretStore }] = await Promise.all([
      import('@kubernetes/client-node'),
      import('./kubeSecretStore.js'),
    ]);
    const kubeConfig = new KubeConfig();
    if (settings.kubeconfig) kubeConfig.loadFromFile(settings.kubeconfig);
    else kubeConfig.loadFromDefault();
    const namespaces = settings.watchNamespaces
      .split(',')
      .map((n) => n.trim())
      .filter((n) => n !== '');
    return new KubeSecretStore({ kubeConfig, namespaces, log, registry });
  }
  if (settings.secretsDir)
    return new (await import('./dirSecretStore.js')).DirSecretStore({ dir: settings.secretsDir, log });
  return new NoSecrets();
}
