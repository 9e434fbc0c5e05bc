import { ModelLoadError, RiskModelSession } from '../../common/risk/model.js';

export type ModelCheck =
  | { readonly state: 'pending' }
  | { readonly state: 'ok' }
  | { readonly state: 'refused'; readonly error: ModelLoadError };

/** Distinct (digest, width) results kept; a cluster has a few models, each a few versions. */
const KEEP = 64;

/**
 * Whether a model's bytes load, as a sidecar would load them: the same code
 * (common/risk/model.ts: onnxruntime, the inputs and outputs of a Nox model, the RiskModel's
 * feature count), run once per digest and width, in the background. So the RiskModel's status
 * says why a model is refused (InvalidModel, WrongInputs) before any sidecar has tried it, and
 * `loadedSha256` names only a model the sidecars will run.
 */
export class ModelChecks {
  readonly #results = new Map<string, ModelCheck>();

  check(sha256: string, width: number, bytes: Uint8Array): ModelCheck {
    const key = `${sha256}:${width}`;
    const known = this.#results.get(key);
    if (known) {
      // Most recently asked last, so the oldest is the first to go.
      this.#results.delete(key);
      this.#results.set(key, known);
      return known;
    }
    this.#results.set(key, { state: 'pending' });
    while (this.#results.size > KEEP) this.#results.delete(this.#results.keys().next().value!);
    RiskModelSession.load(bytes, sha256, width).then(
      (session) => {
        this.#settle(key, { state: 'ok' });
        void session.retire();
      },
      (e: unknown) =>
        this.#settle(key, {
          state: 'refused',
          error: e instanceof ModelLoadError ? e : new ModelLoadError('InvalidModel', String(e)),
        }),
    );
    return { state: 'pending' };
  }

  #settle(key: string, result: ModelCheck): void {
    if (this.#results.has(key)) this.#results.set(key, result);
  }
}
