// Prints the failed tests recorded in vitest JSON reports (the files given), so that the end of
// a `make test` log says what failed even when a later vitest run printed after it.
// Exits 0 either way: the exit status of the run is vitest's own.
import { existsSync, readFileSync } from 'node:fs';
import { relative } from 'node:path';

const lines = [];
for (const file of process.argv.slice(2)) {
  if (!existsSync(file)) {
    lines.push(`${file}: no report (vitest did not finish)`);
    continue;
  }
  const report = JSON.parse(readFileSync(file, 'utf8'));
  for (const suite of report.testResults ?? []) {
    const name = relative(process.cwd(), suite.name);
    const failed = (suite.assertionResults ?? []).filter((t) => t.status === 'failed');
    for (const t of failed) {
      const first = String(t.failureMessages?.[0] ?? '').split('\n')[0];
      lines.push(`FAIL ${name} > ${t.fullName}\n     ${first}`);
    }
    // A file that failed outside any test (a hook, an import) has no failed assertion.
    if (failed.length === 0 && suite.status === 'failed')
      lines.push(`FAIL ${name}\n     ${String(suite.message ?? '').split('\n')[0]}`);
  }
}
if (lines.length) console.log(`make test: what failed\n${lines.join('\n')}`);
