/** A model as a ConfigMap holds it: its bytes, and the digest its publisher wrote beside them. */
export interface StoredModel {
  readonly bytes: Uint8Array;
  /** The ConfigMap's nox.dev/sha256 annotation, lower case; undefined when it has none. */
  readonly publishedSha256: string | undefined;
}

/** Where RiskModels with a configMapRef find their model. */
export interface ModelStore {
  /** The binaryData key of a labelled ConfigMap; undefined when the ConfigMap or key is absent. */
  get(namespace: string, name: string, key: string): StoredModel | undefined;
  /** Why get() finds nothing in this mode, for the load error; undefined when it could. */
  readonly unavailable: string | undefined;
  onChange(listener: () => void): void;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Standalone: no API server, so no ConfigMaps; a model is a file (model.path). */
export const noModelStore: ModelStore = {
  get: () => undefined,
  unavailable:
    'configMapRef needs the Kubernetes configuration source (NOX_CONFIG_SOURCE=kubernetes); standalone, name the file in model.path',
  onChange: () => {},
  start: async () => {},
  stop: async () => {},
};
