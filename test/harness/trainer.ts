import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { scratchDir } from './process.js';
import { seeded } from './random.js';
import { repoRoot } from './tools.js';

const run = promisify(execFile);

/**
 * The trainer's Python (scripts/tools.sh python_env). Called by its venv path, not resolved
 * like tool(): a venv is found from the path its interpreter was started by.
 */
export function trainerPython(): string {
  const path = join(repoRoot, '.tools', 'python', 'bin', 'python');
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(`the trainer's Python is not installed at ${path}; run \`make tools\``);
  }
  return path;
}

export interface TrainedModel {
  readonly path: string;
  readonly bytes: Buffer;
  readonly sha256: string;
  /** The trainer's JSON report. */
  readonly report: Record<string, unknown>;
}

/**
 * A model trained by the real trainer (trainer/nox_trainer/train.py) on `rows` (one value per
 * feature each), as if recorded `stepS` seconds apart; the last tenth is its held-out window.
 */
export async function trainModel(opts: {
  features: readonly string[];
  rows: readonly (readonly number[])[];
  contamination?: number;
  seed?: number;
  stepS?: number;
}): Promise<TrainedModel> {
  const dir = scratchDir('trainer');
  const step = opts.stepS ?? 10;
  const vectors = join(dir, 'vectors.ndjson');
  writeFileSync(
    vectors,
    opts.rows
      .map((row, i) =>
        JSON.stringify({
          at: 1_700_000_000 + i * step,
          features: Object.fromEntries(opts.features.map((f, j) => [f, row[j]])),
        }),
      )
      .join('\n'),
  );
  const out = join(dir, 'model.onnx');
  const holdoutHours = (opts.rows.length * step) / 10 / 3600;
  const { stdout } = await run(
    trainerPython(),
    [
      '-m',
      'nox_trainer.train',
      '--vectors',
      vectors,
      '--features',
      opts.features.join(','),
      '--out',
      out,
      '--lookback-hours',
      String((opts.rows.length * step) / 3600 + 1),
      '--holdout-hours',
      String(holdoutHours),
      '--min-events',
      '100',
      '--contamination',
      String(opts.contamination ?? 0.01),
      '--seed',
      String(opts.seed ?? 0),
    ],
    { cwd: join(repoRoot, 'trainer'), maxBuffer: 1 << 20 },
  );
  const bytes = readFileSync(out);
  return {
    path: out,
    bytes,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    report: JSON.parse(stdout) as Record<string, unknown>,
  };
}

/** The features ordinaryRows makes, in order. */
export const ORDINARY_FEATURES = ['subjectRate1m', 'writeMethod', 'pathNovelty'] as const;

/**
 * Ordinary traffic for ORDINARY_FEATURES: a few requests a minute, rarely a few dozen
 * (log-normal, as per-user request rates are), a fifth of them writes, few new routes.
 */
export function ordinaryRows(n: number, seed: number): number[][] {
  const { next, normal } = seeded(seed);
  return Array.from({ length: n }, () => [
    1 + Math.floor(Math.exp(1.5 + 0.6 * normal())),
    next() < 0.2 ? 1 : 0,
    next() < 0.05 ? 1 : 0,
  ]);
}
