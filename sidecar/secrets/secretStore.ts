/**
 * Read access to Kubernetes Secrets, the only place Nox takes secrets from: client
 * secrets, session encryption keys, API keys. In a cluster the sidecar reads them through
 * the API server (watched, so a deleted Secret stops working within seconds); standalone,
 * from Secret volumes mounted as files, laid out as Kubernetes mounts them.
 */
export interface SecretStore {
  /** One key of one Secret, or undefined when the Secret or the key does not exist. */
  get(namespace: string, name: string, key: string): Buffer | undefined;
  /** Every Secret of the namespace carrying all the given labels: name → data. */
  select(
    namespace: string,
    labels: Readonly<Record<string, string>>,
  ): ReadonlyMap<string, Readonly<Record<string, Buffer>>>;
  /** Called after any change, so caches built from Secrets can be dropped. */
  onChange(listener: () => void): void;
  start(): Promise<void>;
  stop(): Promise<void>;
}
