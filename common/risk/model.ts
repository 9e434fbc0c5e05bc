import { createHash } from 'node:crypto';
import type { InferenceSession } from 'onnxruntime-node';

/** Why a model was not loaded: the RiskModel's status condition reason. */
export type ModelLoadFailure =
  | 'DigestMismatch'
  | 'DigestMissing'
  | 'InvalidModel'
  | 'WrongInputs'
  | 'ModelMissing';

export class ModelLoadError extends Error {
  constructor(
    readonly reason: ModelLoadFailure,
    message: string,
  ) {
    super(message);
  }
}

/** onnxruntime-node, loaded on the first model: a sidecar without a RiskModel never maps its 50 MB. */
let ort: typeof import('onnxruntime-node') | undefined;
async function runtime(): Promise<typeof import('onnxruntime-node')> {
  ort ??= await import('onnxruntime-node');
  return ort;
}

/**
 * One loaded risk model: an onnxruntime session over the model's bytes, verified against the
 * RiskModel's digest and its feature count. The model (nox trainer, trainer/nox_trainer) takes
 * `features` float32 [N, F] and gives `risk` [N, 1], already the 0..1 score the thresholds
 * compare: nothing model-specific happens here.
 */
export class RiskModelSession {
  #inflight = 0;
  #retired = false;
  #released: Promise<void> | undefined;

  private constructor(
    private readonly session: InferenceSession,
    readonly sha256: string,
    readonly width: number,
  ) {}

  /**
   * Throws ModelLoadError: a digest that does not match (a half-written file, the wrong
   * ConfigMap key), bytes onnxruntime refuses, or inputs and outputs not of a Nox model.
   */
  static async load(bytes: Uint8Array, sha256: string, width: number): Promise<RiskModelSession> {
    const digest = createHash('sha256').update(bytes).digest('hex');
    if (digest !== sha256.toLowerCase())
      throw new ModelLoadError(
        'DigestMismatch',
        `the model's sha256 is ${digest}, the RiskModel expects ${sha256.toLowerCase()}`,
      );
    const { InferenceSession } = await runtime();
    let session: InferenceSession;
    try {
      // One thread each: the sidecar has its own event loop to run on these cores, and a
      // batch of a few dozen rows takes tens of microseconds; more threads only add handoffs.
      session = await InferenceSession.create(bytes, {
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: 'all',
      });
    } catch (e) {
      throw new ModelLoadError('InvalidModel', `onnxruntime refused the model: ${(e as Error).message}`);
    }
    const problem = wrongInterface(session, width);
    if (problem) {
      await session.release();
      throw new ModelLoadError('WrongInputs', problem);
    }
    return new RiskModelSession(session, digest, width);
  }

  /** The risk of each of the first `count` rows of `rows` (width values each, row-major). */
  async score(rows: Float32Array, count: number): Promise<Float32Array> {
    if (this.#retired && this.#inflight === 0) throw new Error('risk model session released');
    const done = this.hold();
    try {
      const { Tensor } = await runtime();
      const input = new Tensor('float32', rows.subarray(0, count * this.width), [count, this.width]);
      const out = await this.session.run({ features: input }, ['risk']);
      return out.risk!.data as Float32Array;
    } finally {
      done();
    }
  }

  /**
   * Keeps the session alive until the returned function is called, retired or not: a batch
   * opened for this model holds it from its first row to its answer.
   */
  hold(): () => void {
    this.#inflight++;
    let once = false;
    return () => {
      if (once) return;
      once = true;
      this.#inflight--;
      if (this.#retired && this.#inflight === 0) this.#release();
    };
  }

  /**
   * Another model took this one's place: the session is freed once the batches running on it
   * are done (a batch is bound to its model when it opens, so none starts on it any more).
   */
  retire(): Promise<void> {
    this.#retired = true;
    if (this.#inflight === 0) this.#release();
    return this.#released ?? new Promise<void>((resolve) => this.#onReleased.push(resolve));
  }

  #onReleased: (() => void)[] = [];
  #release(): void {
    this.#released ??= this.session.release().finally(() => {
      for (const done of this.#onReleased.splice(0)) done();
    });
  }
}

/** What is wrong with the session's inputs and outputs for a model of `width` features. */
function wrongInterface(session: InferenceSession, width: number): string | undefined {
  if (!session.inputNames.includes('features'))
    return `the model has inputs ${session.inputNames.join(', ')}; a Nox risk model takes "features"`;
  if (!session.outputNames.includes('risk'))
    return `the model has outputs ${session.outputNames.join(', ')}; a Nox risk model gives "risk"`;
  const meta = (
    session as unknown as { inputMetadata?: readonly { name: string; shape?: readonly unknown[] }[] }
  ).inputMetadata?.find((m) => m.name === 'features');
  const declared = meta?.shape?.[1];
  if (typeof declared === 'number' && declared !== width)
    return `the model takes ${declared} features, the RiskModel lists ${width}`;
  return undefined;
}
