import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../test/harness/tools.js';
import type { LoadResult } from './lib/measure.js';
import { scenarios } from './scenarios/index.js';

/**
 * `make bench [SCENARIO=name] [DURATION=s] [CONCURRENCY=n]`: runs scenarios against real
 * components, prints a table and writes bench/results/<scenario>.json. Not a test: the
 * numbers depend on the machine, so nothing here asserts on them.
 */
async function main(): Promise<void> {
  const only = process.env.SCENARIO || process.argv[2];
  const durationS = Number(process.env.DURATION || 10);
  const concurrency = Number(process.env.CONCURRENCY || 64);
  const selected = scenarios.filter((s) => !only || only === 'all' || s.name === only);
  if (selected.length === 0)
    throw new Error(`no scenario "${only}"; known: ${scenarios.map((s) => s.name).join(', ')}`);
  const outDir = join(repoRoot, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  for (const scenario of selected) {
    process.stdout.write(
      `\n== ${scenario.name}: ${scenario.describe} (${durationS}s at concurrency ${concurrency})\n`,
    );
    const results = await scenario.run({ durationS, concurrency });
    printTable(results);
    const file = join(outDir, `${scenario.name}.json`);
    writeFileSync(
      file,
      `${JSON.stringify(
        {
          scenario: scenario.name,
          describe: scenario.describe,
          at: new Date().toISOString(),
          machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
          results,
        },
        null,
        2,
      )}\n`,
    );
    process.stdout.write(`wrote ${file}\n`);
  }
}

function printTable(results: LoadResult[]): void {
  const ms = (v: number) => (Number.isFinite(v) ? v.toFixed(3) : '-');
  const rows = [
    ['via', 'tool', 'conc', 'checks/s', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'errors', 'peak RSS MiB'],
    ...results.map((r) => [
      r.via,
      r.tool,
      String(r.concurrency),
      String(r.checksPerSec),
      ms(r.p50),
      ms(r.p90),
      ms(r.p99),
      ms(r.p999),
      String(r.errors),
      String(r.sidecarPeakRssMiB ?? '-'),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows) process.stdout.write(`${row.map((c, i) => c.padStart(widths[i]!)).join('  ')}\n`);
  for (const r of results) {
    if (!r.extra) continue;
    const fmt = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(3));
    process.stdout.write(
      `  ${r.via}/${r.tool}: ${Object.entries(r.extra)
        .map(([k, v]) => `${k}=${fmt(v)}`)
        .join(' ')}\n`,
    );
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
