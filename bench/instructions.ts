import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import pg from 'pg';
import { migrate } from '../common/db/migrate.js';
import { createLogger } from '../common/logger.js';
import { freePort } from '../test/harness/ports.js';
import { pgQuery, startPostgres } from '../test/harness/postgres.js';
import { scratchDir, start, waitUntil } from '../test/harness/process.js';
import { repoRoot } from '../test/harness/tools.js';
import { callgrindCommand, callgrindControl, readDump, splitV8 } from './lib/callgrind.js';
import { ghz } from './lib/measure.js';
import { type Samples, settledScrape, sum } from './lib/metrics.js';
import { realisticCheckRequest } from './lib/requests.js';
import { mint, serveJwks, writeGhzData } from './lib/tokens.js';
import { allowAllPolicy } from './scenarios/allow.js';
import { CACHED_TOKENS, policies as jwtPolicies } from './scenarios/jwt.js';

/**
 * `make bench-instructions SCENARIO=<allow|jwt-cached|jwt-fresh>`, or
 * `node dist/bench/instructions.js <scenario> [--checks N] [--warmup N] [--runs N] [--tree DIR]`:
 * the instructions the sidecar executes per check, counted by callgrind over a fixed number
 * of checks. Unlike checks/s, the count does not depend on what else the machine runs, so
 * two commits can be compared on a shared machine. Prints a table and writes
 * bench/results/instructions-<scenario>.json.
 */

const run = promisify(execFile);
const PATH = '/api/items';
/** As `make bench`: 64 calls in flight on one connection. */
const CONCURRENCY = 64;

/** A ghz load: one CheckRequest for every call, or a file of them (a token per call). */
type Input = { data: object } | { binaryFile: string; env: NodeJS.ProcessEnv };

interface Load {
  policy: string;
  warm: Input;
  measured: Input;
  /** What every measured check must find in the sidecar's token cache. */
  tokenCache?: 'hit' | 'miss';
  /** More of the environment of the sidecar of run `run`. */
  env?(run: number): NodeJS.ProcessEnv;
  /**
   * Waits until the sidecar has finished the work the checks so far left behind (called after
   * the warm-up and after the measured checks, both inside and outside the counted window), so
   * that the count holds the whole of what the measured checks cost, and nothing of the warm-up's.
   */
  settle?(run: number, checksSoFar: number): Promise<void>;
  close(): Promise<void>;
}

interface Scenario {
  describe: string;
  prepare(dir: string, counts: { checks: number; warmup: number }): Promise<Load>;
}

const scenarios: Record<string, Scenario> = {
  allow: {
    describe: 'an AccessPolicy allows the path; no identity (as the allow bench)',
    prepare: async () => {
      const input = { data: realisticCheckRequest(PATH) };
      return { policy: allowAllPolicy, warm: input, measured: input, close: async () => {} };
    },
  },
  'jwt-cached': {
    describe: `bearer RS256 JWT, one of ${CACHED_TOKENS} the warm-up put in the token cache (as the jwt bench)`,
    prepare: (dir, counts) => signedIn(dir, 'hit', counts),
  },
  'jwt-cached-db': {
    describe:
      'jwt-cached, with a PostgreSQL (user profiles, overrides), audit Off: the base of jwt-cached-audit',
    prepare: async (dir, counts) => withDatabase(dir, await signedIn(dir, 'hit', counts), 'Off'),
  },
  'jwt-cached-audit': {
    describe:
      'jwt-cached-db with audit BestEffort: every event recorded, spooled and COPYed inside the window',
    prepare: async (dir, counts) => withDatabase(dir, await signedIn(dir, 'hit', counts), 'BestEffort'),
  },
  'jwt-fresh': {
    describe:
      'bearer RS256 JWT, a new one per check: decode, signature check, cache insert (as the jwt bench)',
    prepare: (dir, counts) => signedIn(dir, 'miss', counts),
  },
};

/** The jwt bench's issuer, JWKS and policy; tokens written as ghz -B files. */
async function signedIn(
  dir: string,
  tokenCache: 'hit' | 'miss',
  { checks, warmup }: { checks: number; warmup: number },
): Promise<Load> {
  if (tokenCache === 'hit' && warmup < CACHED_TOKENS)
    throw new Error(`--warmup ${warmup}: fewer than the ${CACHED_TOKENS} tokens to cache`);
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const issuer = await serveJwks(publicKey);
  try {
    const file = (name: string, tokens: string[]): Input => {
      const binaryFile = join(dir, name);
      writeGhzData(binaryFile, PATH, tokens);
      // As the jwt bench: at the default GOGC ghz spends its CPU rescanning the decoded requests.
      return { binaryFile, env: { GOGC: '2000' } };
    };
    let warm: Input;
    let measured: Input;
    if (tokenCache === 'hit') {
      warm = measured = file('cached.bin', await mint(privateKey, issuer.issuer, 0, CACHED_TOKENS));
    } else {
      // Distinct tokens for the warm-up and the run; each run starts a new sidecar, so the
      // same files are misses again.
      const pool = await mint(privateKey, issuer.issuer, 0, warmup + checks);
      warm = file('warm.bin', pool.slice(0, warmup));
      measured = file('measured.bin', pool.slice(warmup));
    }
    return {
      policy: jwtPolicies(issuer.issuer, issuer.jwksUri),
      warm,
      measured,
      tokenCache,
      close: issuer.close,
    };
  } catch (e) {
    await issuer.close();
    throw e;
  }
}

/**
 * The load with a PostgreSQL for the sidecar (the schema migrated). With audit, a settle step
 * waits until every event recorded so far is written to it: an event's cost, from the check
 * to its row, is then inside the window of the checks that made it.
 */
async function withDatabase(dir: string, load: Load, audit: 'Off' | 'BestEffort'): Promise<Load> {
  const db = await startPostgres();
  try {
    const pool = new pg.Pool({ connectionString: db.connectionString, max: 1 });
    try {
      await migrate(pool, createLogger('bench', { level: 'silent' }));
    } finally {
      await pool.end();
    }
  } catch (e) {
    await db.stop();
    throw e;
  }
  return {
    ...load,
    // A spool per sidecar (each run starts a new one: one left by the last would be replayed)
    // and a name per sidecar for its rows.
    env: (run) => ({
      NOX_DATABASE_URL: db.connectionString,
      NOX_AUDIT: audit,
      NOX_AUDIT_SPOOL_DIR: join(dir, `spool-${run}`),
      POD_NAME: `bench-${run}`,
    }),
    // Polls PostgreSQL, not the sidecar: a /metrics scrape would be counted.
    settle: async (run, checks) => {
      if (audit === 'Off') return;
      await waitUntil(
        `the audit events of ${checks} checks in PostgreSQL`,
        async () => {
          const [row] = await pgQuery<{ n: string }>(
            db,
            'SELECT count(*) AS n FROM audit_decisions WHERE sidecar = $1',
            [`bench-${run}`],
          );
          const n = Number(row!.n);
          if (n > checks) throw new Error(`${n} audit rows for ${checks} checks`);
          return n === checks;
        },
        300_000,
        { intervalMs: 200 },
      );
    },
    close: async () => {
      await load.close();
      await db.stop();
    },
  };
}

/**
 * The sidecar built in `tree` under callgrind, counting nothing yet, started as
 * test/harness/sidecar.ts starts it (which has no way to put valgrind in front, and gives
 * start-up 20 s, where under valgrind it takes about a minute on a busy machine).
 */
async function startUnderCallgrind(
  tree: string,
  policyPath: string,
  outFile: string,
  env: NodeJS.ProcessEnv = {},
) {
  const entry = join(tree, 'dist', 'sidecar', 'main.js');
  if (!existsSync(entry)) throw new Error(`${entry} is missing; run \`make build\` in ${tree}`);
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const [valgrind, ...args] = callgrindCommand(outFile);
  const service = start('nox-authz-callgrind', valgrind!, [...args, process.execPath, entry], {
    cwd: tree,
    logFile: `${outFile}.log`,
    env: {
      NOX_GRPC_PORT: String(grpcPort),
      NOX_HTTP_PORT: String(httpPort),
      NOX_POLICY_PATH: policyPath,
      NOX_LOG_LEVEL: 'warn',
      // Under valgrind a check is 30-100x slower: at the production 150 ms deadline checks
      // would be denied fail-closed, and the JWKS could expire mid-run and be fetched again.
      // Both at the most the settings accept, for this run only.
      NOX_CHECK_DEADLINE_MS: '60000',
      NOX_JWKS_MAX_AGE_MS: '86400000',
      ...env,
    },
  });
  await waitUntil(
    'nox-authz (callgrind) /readyz',
    async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status === 200,
    300_000,
    { svc: service, intervalMs: 500 },
  );
  return { grpcPort, httpPort, pid: service.child.pid!, stop: () => service.stop(30_000) };
}

/**
 * Fails unless the sidecar allowed exactly the `n` checks sent between two scrapes (a deny
 * would be measured as a cheaper check), each with the token-cache result the scenario is about.
 */
function expectAllowed(
  what: string,
  before: Samples,
  after: Samples,
  n: number,
  tokenCache?: 'hit' | 'miss',
): void {
  const d = (name: string, where?: Record<string, string>) =>
    sum(after, name, where) - sum(before, name, where);
  const allowed = d('nox_checks_total', { decision: 'allow' });
  if (d('nox_checks_total') !== n || allowed !== n) {
    const seen = after
      .filter((s) => s.name === 'nox_checks_total')
      .map((s) => `${s.labels.decision}/${s.labels.code}: ${d(s.name, s.labels)}`);
    throw new Error(
      `${what}: sent ${n} checks, expected ${n} allowed; the sidecar counted ${seen.join(', ')}`,
    );
  }
  if (!tokenCache) return;
  const family = 'nox_identity_token_cache_total';
  if (!after.families.has(family)) {
    process.stderr.write(`warning: this sidecar has no ${family}; token-cache ${tokenCache}s unconfirmed\n`);
    return;
  }
  const found = d(family, { result: tokenCache });
  if (found !== n)
    throw new Error(`${what}: ${found} token-cache ${tokenCache}s in ${n} checks, expected all`);
}

interface RunResult {
  run: number;
  checks: number;
  instructions: number;
  perCheck: number;
  v8CompilerPerCheck: number;
  v8GcPerCheck: number;
  /** The figure to compare: without V8's optimizing compilers and GC (see lib/callgrind.ts). */
  perCheckExclCompilerGc: number;
  wallS: number;
  dump: string;
}

async function measureOnce(
  n: number,
  tree: string,
  dir: string,
  load: Load,
  counts: { checks: number; warmup: number },
): Promise<RunResult> {
  const policyPath = join(dir, 'policy.yaml');
  writeFileSync(policyPath, load.policy);
  const outFile = join(dir, `callgrind.${n}.out`);
  const sidecar = await startUnderCallgrind(tree, policyPath, outFile, load.env?.(n));
  const send = (input: Input, count: number) =>
    ghz({ port: sidecar.grpcPort, concurrency: CONCURRENCY, count, ...input });
  try {
    const atStart = await settledScrape(sidecar.httpPort);
    // Warm-up: JIT, the token cache; not counted (--instr-atstart=no).
    if (counts.warmup > 0) await send(load.warm, counts.warmup);
    const warmed = await settledScrape(sidecar.httpPort);
    expectAllowed('warm-up', atStart, warmed, counts.warmup);
    await load.settle?.(n, counts.warmup);
    await callgrindControl(sidecar.pid, '-z');
    await callgrindControl(sidecar.pid, '-i', 'on');
    const result = await send(load.measured, counts.checks);
    await load.settle?.(n, counts.warmup + counts.checks);
    await callgrindControl(sidecar.pid, '-i', 'off');
    await callgrindControl(sidecar.pid, '-d');
    if (result.errors > 0 || result.requests !== counts.checks)
      throw new Error(`ghz: ${result.requests} of ${counts.checks} calls answered, ${result.errors} errors`);
    const after = await settledScrape(sidecar.httpPort);
    expectAllowed('measured run', warmed, after, counts.checks, load.tokenCache);
    // callgrind_control -d writes the counts so far to <out file>.1.
    const dump = readDump(`${outFile}.1`);
    const v8 = splitV8(dump);
    const per = (v: number) => Math.round(v / counts.checks);
    return {
      run: n,
      checks: counts.checks,
      instructions: dump.total,
      perCheck: per(dump.total),
      v8CompilerPerCheck: per(v8.compiler),
      v8GcPerCheck: per(v8.gc),
      perCheckExclCompilerGc: per(v8.rest),
      wallS: Math.round(result.durationS * 10) / 10,
      dump: `${outFile}.1`,
    };
  } finally {
    await sidecar.stop();
  }
}

function usage(): never {
  const names = Object.keys(scenarios).join('|');
  process.stderr.write(
    `usage: node dist/bench/instructions.js <${names}> [--checks N] [--warmup N] [--runs N] [--tree DIR]\n`,
  );
  process.exit(2);
}

function parse() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      checks: { type: 'string', default: '5000' },
      warmup: { type: 'string', default: '10000' },
      runs: { type: 'string', default: '3' },
      // The built tree whose sidecar to measure: a worktree of a commit older than this tool.
      tree: { type: 'string', default: repoRoot },
    },
  });
  const name = positionals[0];
  if (positionals.length !== 1 || !name || !scenarios[name]) usage();
  const count = (v: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) usage();
    return n;
  };
  return {
    name,
    scenario: scenarios[name]!,
    checks: count(values.checks, 1),
    warmup: count(values.warmup, 0),
    runs: count(values.runs, 1),
    tree: resolve(values.tree),
  };
}

async function git(tree: string, ...args: string[]): Promise<string | undefined> {
  return run('git', ['-C', tree, ...args]).then(
    (r) => r.stdout.trim(),
    () => undefined,
  );
}

async function main(): Promise<void> {
  const { name, scenario, checks, warmup, runs, tree } = parse();
  const commit = await git(tree, 'rev-parse', '--short', 'HEAD');
  const status = await git(tree, 'status', '--porcelain', '--untracked-files=no');
  const dirty = status === undefined ? undefined : status !== '';
  const valgrind = await run('valgrind', ['--version']).then(
    (r) => r.stdout.trim(),
    () => {
      throw new Error('valgrind is not installed; `make tools-bench` installs it');
    },
  );
  process.stdout.write(
    `\n== ${name}: ${scenario.describe}\n   ${tree} at ${commit ?? '?'}${dirty ? ' (modified)' : ''}; ` +
      `${valgrind}; ${runs} run(s) of ${checks} checks after ${warmup} warm-up, concurrency ${CONCURRENCY}\n`,
  );
  const dir = scratchDir('bench-instructions');
  const counts = { checks, warmup };
  const load = await scenario.prepare(dir, counts);
  const results: RunResult[] = [];
  try {
    for (let n = 1; n <= runs; n++) results.push(await measureOnce(n, tree, dir, load, counts));
  } finally {
    await load.close();
    // The token files run to tens of MB; the dumps stay for callgrind_annotate.
    for (const f of ['cached.bin', 'warm.bin', 'measured.bin']) rmSync(join(dir, f), { force: true });
  }
  const summary = {
    perCheck: stats(results.map((r) => r.perCheck)),
    perCheckExclCompilerGc: stats(results.map((r) => r.perCheckExclCompilerGc)),
  };
  printTable(results, summary);
  const outDir = join(repoRoot, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `instructions-${name}.json`);
  const machine = { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, valgrind };
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        scenario: name,
        describe: scenario.describe,
        at: new Date().toISOString(),
        tree: { dir: tree, commit, dirty },
        machine,
        settings: { checks, warmup, runs, concurrency: CONCURRENCY },
        summary,
        runs: results,
      },
      null,
      2,
    )}\n`,
  );
  process.stdout.write(`wrote ${file}\ncallgrind dumps: ${dir}\n`);
}

function stats(v: number[]) {
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const [min, max] = [Math.min(...v), Math.max(...v)];
  return { mean: Math.round(mean), min, max, spreadPct: Math.round(((max - min) / mean) * 1000) / 10 };
}

function printTable(results: RunResult[], summary: Record<string, ReturnType<typeof stats>>): void {
  const k = (v: number) => v.toLocaleString('en-US');
  const rows = [
    ['run', 'checks', 'instr/check', 'V8 compiler', 'V8 GC', 'excl. compiler+GC', 'wall s'],
    ...results.map((r) => [
      String(r.run),
      String(r.checks),
      k(r.perCheck),
      k(r.v8CompilerPerCheck),
      k(r.v8GcPerCheck),
      k(r.perCheckExclCompilerGc),
      String(r.wallS),
    ]),
  ];
  if (results.length > 1) {
    const s = (x: ReturnType<typeof stats>) => `${k(x.mean)} (${k(x.min)}-${k(x.max)}, ${x.spreadPct}%)`;
    rows.push(['mean', '', s(summary.perCheck!), '', '', s(summary.perCheckExclCompilerGc!), '']);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows) process.stdout.write(`${row.map((c, i) => c.padStart(widths[i]!)).join('  ')}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
