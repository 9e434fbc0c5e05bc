import { readFile } from 'node:fs/promises';
import { Counter, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import type { RiskModelSpec } from '../../common/resources/types.gen.js';
import { ModelLoadError, RiskModelSession } from './model.js';

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
 * running on it end.
 */
export class RiskModels {
  readonly #entries = new Map<string, Entry>();
  readonly #loads: Counter<'result'>;

  constructor(
    private readonly log: Logger,
    registry: Registry,
  ) {
    this.#loads = new Counter({
      name: 'nox_risk_model_loads_total',
      help: 'Risk model loads by result: loaded, or the reason it was refused (DigestMismatch, InvalidModel, WrongInputs, ModelMissing).',
      labelNames: ['result'],
      registers: [registry],
    });
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
    const keys = new Set(models.map((m) => m.key));
    for (const [key, e] of this.#entries) {
      if (keys.has(key)) continue;
      this.#entries.delete(key);
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
    const want = spec.model.sha256.toLowerCase();
    // Running already; a model that failed is tried again (its file may have appeared).
    if (e.session?.sha256 === want) return;
    e.wanted = want;
    try {
      const bytes = await modelBytes(spec);
      const session = await RiskModelSession.load(bytes, want, spec.features.length);
      if (e.wanted !== want || this.#entries.get(key) !== e) {
        await session.retire(); // a newer spec (or none) took over while this one loaded
        return;
      }
      const old = e.session;
      e.session = session;
      e.error = undefined;
      this.#loads.inc({ result: 'loaded' });
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

  async close(): Promise<void> {
    const sessions = [...this.#entries.values()].map((e) => e.session);
    this.#entries.clear();
    await Promise.all(sessions.map((s) => s?.retire()));
  }
}

async function modelBytes(spec: RiskModelSpec): Promise<Uint8Array> {
  if (spec.model.path) {
    try {
      return await readFile(spec.model.path);
    } catch (e) {
      throw new ModelLoadError('ModelMissing', `cannot read ${spec.model.path}: ${(e as Error).message}`);
    }
  }
  // A ConfigMap's model reaches the sidecar when the chart mounts it as a file (model.path);
  // reading ConfigMaps from the API server is not done by the sidecar.
  throw new ModelLoadError(
    'ModelMissing',
    `configMapRef ${spec.model.configMapRef?.name}/${spec.model.configMapRef?.key}: mount the ConfigMap and name the file in model.path`,
  );
}
