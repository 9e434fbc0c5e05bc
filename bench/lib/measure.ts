import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { scratchDir } from '../../test/harness/process.js';
import { tool } from '../../test/harness/tools.js';

const run = promisify(execFile);

function envoyProtoArgs(): string[] {
  const deps = join(
    dirname(createRequire(import.meta.url).resolve('@grpc/grpc-js-xds/package.json')),
    'deps',
  );
  return [
    '--import-paths',
    ['envoy-api', 'googleapis', 'protoc-gen-validate', 'xds'].map((d) => join(deps, d)).join(','),
    '--proto',
    'envoy/service/auth/v3/external_auth.proto',
  ];
}

export interface LoadResult {
  readonly via: 'grpc' | 'envoy';
  readonly tool: string;
  readonly concurrency: number;
  readonly durationS: number;
  readonly requests: number;
  readonly errors: number;
  readonly checksPerSec: number;
  /** Latency percentiles, milliseconds. */
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  /** Peak resident set of the sidecar process(es) over the run, MiB (VmHWM). */
  sidecarPeakRssMiB?: number;
  /** Scenario-specific figures (e.g. from the sidecar's /metrics), printed under the table. */
  extra?: Record<string, number>;
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.ceil((q / 100) * sorted.length) - 1);
  return sorted[Math.max(0, i)]!;
}

/** How long a load runs: a duration, or a fixed number of calls (the same work, however slow the server). */
type Length = { durationS: number } | { count: number };

/**
 * ghz straight at the sidecar's ext_authz service. The schema comes from the same protos the
 * sidecar is generated from: ghz's reflection client fails to resolve a relative type
 * reference (envoy.type.v3.HttpStatus) in the descriptors @grpc/reflection serves.
 */
export async function ghz(
  opts: Length & {
    port: number;
    concurrency: number;
    connections?: number;
  } & (
      | {
          /**
           * The CheckRequest in proto3 JSON. A string is passed as is, so it may hold ghz's Go
           * template actions (e.g. `{{randomInt 0 10000}}`), evaluated afresh for every call.
           */
          data: object | string;
        }
      | {
          /** Length-prefixed binary CheckRequests (ghz -B), one per call in turn. */
          binaryFile: string;
          /** Extra environment for ghz (e.g. GOGC for a large data file). */
          env?: NodeJS.ProcessEnv;
        }
    ),
): Promise<LoadResult> {
  const out = join(scratchDir('ghz'), 'ghz.json');
  const input =
    'binaryFile' in opts
      ? ['-B', opts.binaryFile]
      : ['-d', typeof opts.data === 'string' ? opts.data : JSON.stringify(opts.data)];
  await run(
    tool('ghz'),
    [
      '--insecure',
      ...envoyProtoArgs(),
      '--call',
      'envoy.service.auth.v3.Authorization.Check',
      ...input,
      '-c',
      String(opts.concurrency),
      '--connections',
      String(opts.connections ?? 1),
      ...('count' in opts ? ['-n', String(opts.count)] : ['-z', `${opts.durationS}s`]),
      '--cpus',
      '1',
      '-O',
      'json',
      '-o',
      out,
      `127.0.0.1:${opts.port}`,
    ],
    {
      maxBuffer: 64 * 1024 * 1024,
      ...('env' in opts && opts.env ? { env: { ...process.env, ...opts.env } } : {}),
    },
  );
  const report = JSON.parse(readFileSync(out, 'utf8')) as {
    count: number;
    total: number;
    rps: number;
    statusCodeDistribution?: Record<string, number>;
    details?: { latency: number; status: string; error?: string }[];
    errorDistribution?: Record<string, number>;
  };
  // When -z runs out, ghz closes its connection under the calls still in flight and
  // records them as Unavailable "use of closed network connection": the tool stopping,
  // not the server failing. Anything else is a real error.
  const artefact = (msg: string) => msg.includes('use of closed network connection');
  rmSync(dirname(out), { recursive: true, force: true });
  // Percentiles from every request's latency (ghz's own distribution stops at p99).
  const ok = (report.details ?? []).filter((d) => d.status === 'OK');
  const lat = Float64Array.from(ok.map((d) => d.latency / 1e6)).sort();
  const errors = Object.entries(report.errorDistribution ?? {})
    .filter(([msg]) => !artefact(msg))
    .reduce((a, [, v]) => a + v, 0);
  return {
    via: 'grpc',
    tool: 'ghz',
    concurrency: opts.concurrency,
    durationS: 'count' in opts ? report.total / 1e9 : opts.durationS,
    requests: ok.length + errors,
    errors,
    checksPerSec: Math.round(ok.length / (report.total / 1e9)),
    p50: percentile(lat, 50),
    p90: percentile(lat, 90),
    p99: percentile(lat, 99),
    p999: percentile(lat, 99.9),
  };
}

const wrkReport = `
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout
  io.write(string.format('NOXJSON {"requests":%d,"durationUs":%d,"errors":%d,"p50":%f,"p90":%f,"p99":%f,"p999":%f}\\n',
    summary.requests, summary.duration, errors,
    latency:percentile(50)/1000, latency:percentile(90)/1000, latency:percentile(99)/1000, latency:percentile(99.9)/1000))
end
`;

/**
 * wrk through Envoy: each HTTP request is one ext_authz check plus the upstream hop.
 * `lua` is prepended to the reporting script, e.g. a `request` function that varies headers
 * (it must not define `done`).
 */
export async function wrk(opts: {
  url: string;
  concurrency: number;
  durationS: number;
  threads?: number;
  lua?: string;
}): Promise<LoadResult> {
  const script = join(scratchDir('wrk'), 'report.lua');
  writeFileSync(script, `${opts.lua ?? ''}\n${wrkReport}`);
  const { stdout } = await run(tool('wrk'), [
    '-t',
    String(opts.threads ?? 1),
    '-c',
    String(opts.concurrency),
    '-d',
    `${opts.durationS}s`,
    '-s',
    script,
    opts.url,
  ]);
  const line = stdout.split('\n').find((l) => l.startsWith('NOXJSON '));
  if (!line) throw new Error(`wrk printed no report:\n${stdout}`);
  const r = JSON.parse(line.slice('NOXJSON '.length)) as {
    requests: number;
    durationUs: number;
    errors: number;
    p50: number;
    p90: number;
    p99: number;
    p999: number;
  };
  return {
    via: 'envoy',
    tool: 'wrk',
    concurrency: opts.concurrency,
    durationS: opts.durationS,
    requests: r.requests,
    errors: r.errors,
    checksPerSec: Math.round(r.requests / (r.durationUs / 1e6)),
    p50: r.p50,
    p90: r.p90,
    p99: r.p99,
    p999: r.p999,
  };
}

/** Peak resident set (VmHWM) of a live process, MiB. */
export function peakRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN);
  return Math.round((kb / 1024) * 10) / 10;
}

/**
 * A process's /proc/<pid>/stat fields after the parenthesised command name (which may contain
 * spaces): index 11 is utime (field 14), then stime, cutime, cstime, in clock ticks (USER_HZ,
 * 100 on Linux).
 */
function statFields(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** CPU time (user + system) a live process has used so far, seconds. */
export function cpuSeconds(pid: number): number {
  const f = statFields(pid);
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** A process and its descendants alive now, parents first. */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const visit = (p: number) => {
    out.push(p);
    let children = '';
    try {
      children = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8');
    } catch {
      return; // gone meanwhile
    }
    for (const c of children.trim().split(/\s+/).filter(Boolean)) visit(Number(c));
  };
  visit(pid);
  return out;
}

/**
 * CPU time (user + system) of a process and all its descendants so far, seconds: the live ones
 * read directly, the ones that have exited through their parents' cutime/cstime (a server
 * like PostgreSQL forks a process per connection and reaps it). A process that exits between
 * two readings is counted once it is reaped.
 */
export function processTreeCpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    let f: string[];
    try {
      f = statFields(p);
    } catch {
      continue; // gone meanwhile
    }
    // utime, stime, and the reaped children's cutime, cstime.
    ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  }
  return ticks / 100;
}

/**
 * Puts a process tree under SCHED_IDLE (chrt, util-linux): it runs only on CPU nothing else
 * wants, and the processes it forks later inherit that. For a server that a deployment runs on
 * machines of its own, sharing this one only to be measured.
 */
export function idlePriority(pid: number): void {
  for (const p of processTree(pid)) {
    try {
      execFileSync('chrt', ['--idle', '--all-tasks', '--pid', '0', String(p)], { stdio: 'pipe' });
    } catch (e) {
      if (existsSync(`/proc/${p}`)) throw e;
    }
  }
}

/** Busy and total CPU time of the whole host so far (all cores), in clock ticks. */
export function hostCpuTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const t = line.trim().split(/\s+/).slice(1).map(Number);
  const total = t.reduce((a, b) => a + b, 0);
  // idle + iowait
  return { busy: total - t[3]! - (t[4] ?? 0), total };
}
