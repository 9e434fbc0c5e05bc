import type { RiskModelSession } from '../../common/risk/model.js';

export interface BatchMetrics {
  /** A batch ran: its size and how long inference took (seconds). */
  ran(model: RiskModelSession, size: number, seconds: number): void;
  failed(model: RiskModelSession, size: number): void;
}

export interface BatcherOptions {
  readonly maxSize: number;
  /** Longest a row waits for its batch to fill; 0: the rows that arrive in one turn of the event loop. */
  readonly maxDelayMs: number;
  readonly metrics?: BatchMetrics;
}

interface OpenBatch {
  readonly model: RiskModelSession;
  /** The model is held from the batch's first row to its answer (RiskModelSession.hold). */
  readonly release: () => void;
  readonly rows: Float32Array;
  count: number;
  readonly waiters: { resolve: (risk: number) => void; reject: (e: Error) => void }[];
  /** Until the batch runs: what will run it (a timer, or the end of this turn). */
  timer: { readonly cancel: () => void } | undefined;
}

/**
 * Scores concurrent checks in one inference: rows join the open batch, which runs when it
 * holds maxSize rows or maxDelay after its first row. A batch belongs to the model it was
 * opened for: a row for another model (one swapped in meanwhile) runs the open batch at once
 * and opens a new one, so no inference mixes two models and none waits for a swap.
 */
export class RiskBatcher {
  #open: OpenBatch | undefined;

  constructor(private readonly opts: BatcherOptions) {}

  /** The risk of one row (model.width values); rejects when the inference fails. */
  score(model: RiskModelSession, row: ArrayLike<number>): Promise<number> {
    let batch = this.#open;
    if (batch && batch.model !== model) {
      this.#run(batch);
      batch = undefined;
    }
    if (!batch) {
      batch = {
        model,
        release: model.hold(),
        rows: new Float32Array(this.opts.maxSize * model.width),
        count: 0,
        waiters: [],
        timer: undefined,
      };
      this.#open = batch;
      const open = batch;
      if (this.opts.maxDelayMs > 0) {
        const t = setTimeout(() => this.#run(open), this.opts.maxDelayMs);
        batch.timer = { cancel: () => clearTimeout(t) };
      } else {
        const t = setImmediate(() => this.#run(open));
        batch.timer = { cancel: () => clearImmediate(t) };
      }
    }
    batch.rows.set(row, batch.count * model.width);
    batch.count++;
    const result = new Promise<number>((resolve, reject) => batch.waiters.push({ resolve, reject }));
    if (batch.count >= this.opts.maxSize) this.#run(batch);
    return result;
  }

  #run(batch: OpenBatch): void {
    if (this.#open === batch) this.#open = undefined;
    if (batch.timer === undefined) return; // already running
    batch.timer.cancel();
    batch.timer = undefined;
    const started = performance.now();
    batch.model
      .score(batch.rows, batch.count)
      .finally(batch.release)
      .then(
        (risks) => {
          this.opts.metrics?.ran(batch.model, batch.count, (performance.now() - started) / 1000);
          for (let i = 0; i < batch.waiters.length; i++) batch.waiters[i]!.resolve(risks[i]!);
        },
        (e: Error) => {
          this.opts.metrics?.failed(batch.model, batch.count);
          for (const w of batch.waiters) w.reject(e);
        },
      );
  }
}
