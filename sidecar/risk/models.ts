import { readFile } from 'node:fs/promises';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import {
  RISK_MODEL_DIGEST_ANNOTATION,
  RISK_MODEL_LABEL,
  wantedDigest,
} from '../../common/resources/kinds/riskModel.js';
import type { RiskModelSpec } from '../../common/resources/types.gen.js';
import { ModelLoadError, RiskModelSession } from '../../common/risk/model.js';
import { type ModelStore, noModelStore } from './modelStore.js';

/** A RiskModel of the snapshot: its key ("RiskModel/ns/name") and spec. */
export interface RiskModelRef {
  readonly key: string;
  readonly spec: RiskModelSpec;
}

interface Entry {
  session?: RiskModelSession;
  /** The digest last asked for: a load that finishes after a newer one was asked is dropped. */
  wanted?: string;
  error?: ModelLoadError;
}

/**
 * The loaded model of each RiskModel in force. A new digest is loaded beside the running
 * model and swapped in once it is ready; one that cannot be loaded (missing, a digest that
 * does not match, bytes onnxruntime refuses) leaves the previous model running and is
 * reported (status, metric, log). The replaced session is retired: freed once the batches
 * running on it end. A model is a file (model.path), or a ConfigMap's key (configMapRef,
 * from the ModelStore): a model published to the ConfigMap is loaded as it arrives.
 */
export class RiskModels {
  readonly #entries = new Map<string, Entry>();
  readonly #loads: Counter<'result'>;
  readonly #running: Gauge<'risk_model' | 'sha256'>;
  #models: readonly RiskModelRef[] = [];

  constructor(
    private readonly log: Logger,
    registry: Registry,
    private readonly store: ModelStore = noModelStore,
  ) {
    this.#loads = new Counter({
      name: 'nox_risk_model_loads_total',
      help: 'Risk model loads by result: loaded, or the reason it was refused (DigestMismatch, DigestMissing, InvalidModel, WrongInputs, ModelMissing).',
      labelNames: ['result'],
      registers: [registry],
    });
    this.#running = new Gauge({
      name: 'nox_risk_model_running',
      help: 'The model each RiskModel (namespace/name) scores with, by sha256: 1 while it runs.',
      labelNames: ['risk_model', 'sha256'],
      registers: [registry],
    });
    store.onChange(() => void this.sync(this.#models));
  }

  /** The session of a RiskModel; undefined while none has loaded. */
  session(key: string): RiskModelSession | undefined {
    return this.#entries.get(key)?.session;
  }

  /** Why the RiskModel's wanted model is not the one running; undefined when it is. */
  problem(key: string): ModelLoadError | undefined {
    return this.#entries.get(key)?.error;
  }

  /** The RiskModels now in force: load what changed, retire what is gone. Resolves when settled. */
  async sync(models: readonly RiskModelRef[]): Promise<void> {
    this.#models = models;
    const keys = new Set(models.map((m) => m.key));
    for (const [key, e] of this.#entries) {
      if (keys.has(key)) continue;
      this.#entries.delete(key);
      if (e.session) this.#running.remove({ risk_model: modelName(key), sha256: e.session.sha256 });
      void e.session?.retire();
    }
    await Promise.all(models.map((m) => this.#load(m)));
  }

  async #load({ key, spec }: RiskModelRef): Promise<void> {
    let e = this.#entries.get(key);
    if (!e) {
      e = {};
      this.#entries.set(key, e);
    }
    try {
      const { sha256: want, bytes } = this.#wanted(key, spec);
      // Running already; a model that failed is tried again (its file may have appeared).
      if (e.session?.sha256 === want) {
        e.error = undefined;
        return;
      }
      e.wanted = want;
      const session = await RiskModelSession.load(await bytes(), want, spec.features.length);
      if (e.wanted !== want || this.#entries.get(key) !== e) {
        await session.retire(); // a newer spec (or none) took over while this one loaded
        return;
      }
      const old = e.session;
      e.session = session;
      e.error = undefined;
      this.#loads.inc({ result: 'loaded' });
      if (old) this.#running.remove({ risk_model: modelName(key), sha256: old.sha256 });
      this.#running.set({ risk_model: modelName(key), sha256: want }, 1);
      this.log.info({ riskModel: key, sha256: want }, 'risk model loaded');
      void old?.retire();
    } catch (err) {
      const error =
        err instanceof ModelLoadError ? err : new ModelLoadError('InvalidModel', (err as Error).message);
      e.error = error;
      this.#loads.inc({ result: error.reason });
      this.log.error(
        { riskModel: key, reason: error.reason, err: error.message, running: e.session?.sha256 ?? null },
        e.session ? 'risk model not loaded; the previous one keeps running' : 'risk model not loaded',
      );
    }
  }

  /** The digest the RiskModel asks for now, and how to read the bytes; throws ModelLoadError. */
  #wanted(key: string, spec: RiskModelSpec): { sha256: string; bytes: () => Promise<Uint8Array> } {
    const { path, configMapRef: ref } = spec.model;
    if (path) {
      if (!spec.model.sha256) throw new ModelLoadError('DigestMissing', 'model.path needs model.sha256');
      return { sha256: spec.model.sha256.toLowerCase(), bytes: () => fileBytes(path) };
    }
    if (!ref)
      throw new ModelLoadError(
        'ModelMissing',
        'the RiskModel names neither model.path nor model.configMapRef',
      );
    if (this.store.unavailable) throw new ModelLoadError('ModelMissing', this.store.unavailable);
    const namespace = modelName(key).split('/')[0] ?? '';
    const stored = this.store.get(namespace, ref.name, ref.key);
    if (!stored)
      throw new ModelLoadError(
        'ModelMissing',
        `ConfigMap ${namespace}/${ref.name} (labelled ${RISK_MODEL_LABEL}=true) has no binaryData key "${ref.key}"`,
      );
    const sha256 = wantedDigest(spec.model.sha256, stored.publishedSha256);
    if (!sha256)
      throw new ModelLoadError(
        'DigestMissing',
        `neither model.sha256 nor the ${RISK_MODEL_DIGEST_ANNOTATION} annotation of ConfigMap ${namespace}/${ref.name} names the model's digest`,
      );
    return { sha256, bytes: async () => stored.bytes };
  }

  async close(): Promise<void> {
    const sessions = [...this.#entries.values()].map((e) => e.session);
    this.#entries.clear();
    await Promise.all(sessions.map((s) => s?.retire()));
  }
}

/** "RiskModel/ns/name" → "ns/name". */
const modelName = (key: string) => key.slice(key.indexOf('/') + 1);

async function fileBytes(path: string): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new ModelLoadError('ModelMissing', `cannot read ${path}: ${(e as Error).message}`);
  }
}
