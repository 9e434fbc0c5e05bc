import { beforeAll, describe, expect, it } from 'vitest';
import { ModelLoadError, RiskModelSession } from '../../common/risk/model.js';
import { RiskBatcher } from '../../sidecar/risk/batcher.js';
import { seeded } from '../harness/random.js';
import { type TrainedModel, trainModel } from '../harness/trainer.js';

/**
 * Risk inference with onnxruntime-node on models made by the real trainer (scikit-learn,
 * exported to ONNX): loading and refusing models, batching concurrent rows, and swapping
 * models without mixing them in a batch.
 */
const FEATURES = ['rate', 'ips', 'failures'];

/** Rows like ordinary traffic, seeded (mulberry32), so every run trains the same models. */
function ordinary(n: number, seed: number, scale = 1): number[][] {
  const { next } = seeded(seed);
  return Array.from({ length: n }, () => FEATURES.map(() => (next() + next() + next() - 1.5) * scale));
}

describe('risk inference', () => {
  let a: TrainedModel;
  let b: TrainedModel;

  beforeAll(async () => {
    // Two different models: the second trained on traffic ten times wider, so the same row
    // scores differently under each.
    [a, b] = await Promise.all([
      trainModel({ features: FEATURES, rows: ordinary(3000, 1) }),
      trainModel({ features: FEATURES, rows: ordinary(3000, 2, 10) }),
    ]);
  }, 120_000);

  it('scores ordinary rows low and rows unlike the training far higher', async () => {
    const m = await RiskModelSession.load(a.bytes, a.sha256, FEATURES.length);
    const rows = [...ordinary(200, 9), [8, 8, 8], [-9, 0, 9]];
    const risks = await m.score(Float32Array.from(rows.flat()), rows.length);
    const ordinaryRisks = Array.from(risks.slice(0, 200));
    // The training assumed 1 % outliers: about that share of rows like it reach 0.5.
    expect(ordinaryRisks.filter((r) => r >= 0.5).length).toBeLessThanOrEqual(6);
    expect(Math.max(...ordinaryRisks)).toBeLessThan(0.9);
    // Far outside the training data: at least at the challenge level of the example policy.
    // (An Isolation Forest saturates out there: a row beyond the training range is isolated as
    // fast as the most extreme training rows, not faster.)
    expect(risks[200]).toBeGreaterThanOrEqual(0.7);
    expect(risks[201]).toBeGreaterThanOrEqual(0.7);
    await m.retire();
  });

  it('refuses a model whose digest differs, bytes that are not a model, and a model of another width', async () => {
    const refused = async (bytes: Uint8Array, sha: string, width: number) =>
      RiskModelSession.load(bytes, sha, width).then(
        () => 'loaded',
        (e: unknown) => (e instanceof ModelLoadError ? `${e.reason}: ${e.message}` : String(e)),
      );
    expect(await refused(a.bytes, b.sha256, 3)).toMatch(/^DigestMismatch: the model's sha256 is /);
    const cut = a.bytes.subarray(0, a.bytes.length >> 1);
    const { createHash } = await import('node:crypto');
    const cutSha = createHash('sha256').update(cut).digest('hex');
    expect(await refused(cut, cutSha, 3)).toMatch(/^InvalidModel: onnxruntime refused the model/);
    expect(await refused(a.bytes, a.sha256, 4)).toMatch(/^WrongInputs: the model takes 3 features/);
  });

  it('batches concurrent rows up to maxSize, each row getting its own score', async () => {
    const m = await RiskModelSession.load(a.bytes, a.sha256, FEATURES.length);
    const rows = ordinary(100, 5, 3);
    const alone = await m.score(Float32Array.from(rows.flat()), rows.length);
    const sizes: number[] = [];
    const batcher = new RiskBatcher({
      maxSize: 16,
      maxDelayMs: 5,
      metrics: { ran: (_m, size) => sizes.push(size), failed: () => {} },
    });
    const batched = await Promise.all(rows.map((r) => batcher.score(m, r)));
    expect(batched).toEqual(Array.from(alone));
    expect(sizes.reduce((s, n) => s + n, 0)).toBe(100);
    expect(Math.max(...sizes)).toBe(16);
    expect(sizes.length).toBe(7); // six full batches, and the last four rows after maxDelay
    await m.retire();
  });

  it('a swap mid-stream never mixes two models in one inference; the old session is freed once its batches end', async () => {
    const ma = await RiskModelSession.load(a.bytes, a.sha256, FEATURES.length);
    const mb = await RiskModelSession.load(b.bytes, b.sha256, FEATURES.length);
    const rows = ordinary(60, 7, 4);
    const flat = Float32Array.from(rows.flat());
    const [underA, underB] = await Promise.all([ma.score(flat, rows.length), mb.score(flat, rows.length)]);
    expect(Array.from(underA)).not.toEqual(Array.from(underB));
    const batches: { model: RiskModelSession; size: number }[] = [];
    const batcher = new RiskBatcher({
      maxSize: 8,
      maxDelayMs: 0,
      metrics: { ran: (model, size) => batches.push({ model, size }), failed: () => {} },
    });
    // Rows alternate in runs between the two models, as checks do around a swap.
    const which = rows.map((_, i) => (Math.floor(i / 5) % 2 === 0 ? ma : mb));
    const got = await Promise.all(rows.map((r, i) => batcher.score(which[i]!, r)));
    got.forEach((risk, i) => {
      expect(risk).toBe((which[i] === ma ? underA : underB)[i]);
    });
    expect(batches.reduce((s, x) => s + x.size, 0)).toBe(60);
    expect(batches.every((x) => x.size <= 5)).toBe(true);

    // Retire A while a batch runs on it: that batch completes, then the session is freed.
    const pending = batcher.score(ma, rows[0]!);
    const retired = ma.retire();
    expect(await pending).toBe(underA[0]);
    await retired;
    await expect(ma.score(flat, 1)).rejects.toThrow(/released/);
    await mb.retire();
  });
});
