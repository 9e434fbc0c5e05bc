import type { SecretStore } from './secretStore.js';

/** A store with no Secrets: standalone without NOX_SECRETS_DIR. Everything that needs one fails closed. */
export class NoSecrets implements SecretStore {
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
