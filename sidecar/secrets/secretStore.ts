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

/** What a store keeps of one Secret. */
export interface SecretContent {
  readonly labels: Readonly<Record<string, string>>;
  readonly data: Readonly<Record<string, Buffer>>;
}

/** The Secrets among `secrets` (name → content) carrying every one of `labels`: name → data. */
export function selectByLabels(
  secrets: Iterable<readonly [string, SecretContent]>,
  labels: Readonly<Record<string, string>>,
): ReadonlyMap<string, Readonly<Record<string, Buffer>>> {
  const out = new Map<string, Readonly<Record<string, Buffer>>>();
  const wanted = Object.entries(labels);
  for (const [name, s] of secrets) {
    if (wanted.every(([k, v]) => s.labels[k] === v)) out.set(name, s.data);
  }
  return out;
}
