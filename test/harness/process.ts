import { type ChildProcess, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  createWriteStream,
  mkdirSync,
  mkdtempSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDir } from './tools.js';

/**
 * A service a test started. Every one is recorded in .run/pids/ so that `scripts/reap.sh`
 * can stop whatever an interrupted or crashed test run left behind; in the normal case
 * `stop()` (from afterAll) and the exit hook below stop it.
 */
export interface Service {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logFile: string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL, no grace: a crash as far as the service is concerned. */
  kill(): Promise<void>;
  exited(): boolean;
}

const live = new Set<Service>();
const pidDir = join(runDir, 'pids');

function killAllSync(): void {
  for (const s of live) {
    try {
      if (s.child.pid !== undefined) process.kill(-s.child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}
process.once('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    killAllSync();
    process.exit(130);
  });
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Where stdout and stderr go; defaults to .run/logs/<name>.log */
  logFile?: string;
  /** Run as this user/group (e.g. PostgreSQL, which refuses to run as root). */
  uid?: number;
  gid?: number;
}

export function start(name: string, command: string, args: string[], opts: StartOptions = {}): Service {
  mkdirSync(pidDir, { recursive: true });
  const logDir = join(runDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const logFile = opts.logFile ?? join(logDir, `${name}.log`);
  const out = createWriteStream(logFile, { flags: 'a' });
  // detached: its own process group, so stop() also reaches grandchildren (postgres backends).
  const child = spawn(command, args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    uid: opts.uid,
    gid: opts.gid,
  });
  // Two sources into one file: end it only when both are done (the first to close would
  // otherwise end it under the other; postgres backends outlive the main process).
  let open = 0;
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    open++;
    stream.pipe(out, { end: false });
    stream.once('close', () => {
      if (--open === 0) out.end();
    });
  }
  const pidFile = join(pidDir, `${child.pid}`);
  if (child.pid !== undefined) writeFileSync(pidFile, `${name}\n`);
  let done = false;
  const exit = new Promise<void>((res) => {
    child.once('exit', () => {
      done = true;
      rmSync(pidFile, { force: true });
      live.delete(svc);
      res();
    });
    child.once('error', () => {
      done = true;
      rmSync(pidFile, { force: true });
      live.delete(svc);
      res();
    });
  });
  const signal = (sig: NodeJS.Signals) => {
    if (done || child.pid === undefined) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      /* gone */
    }
  };
  // The main process exiting is not enough: its children (postgres backends) may hold shared
  // memory for a moment longer, and a restart on the same data dir would fail.
  const groupGone = async () => {
    if (child.pid === undefined) return;
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      try {
        process.kill(-child.pid, 0);
      } catch {
        return;
      }
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        return;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const svc: Service = {
    name,
    child,
    logFile,
    exited: () => done,
    async stop(graceMs = 5000) {
      if (done) return;
      signal('SIGTERM');
      const t = setTimeout(() => signal('SIGKILL'), graceMs);
      await exit;
      clearTimeout(t);
      await groupGone();
    },
    async kill() {
      signal('SIGKILL');
      await exit;
      await groupGone();
    },
  };
  live.add(svc);
  return svc;
}

export interface WaitOptions {
  /** A service whose exit fails the wait at once (and whose log the error names). */
  svc?: Service;
  /** Between two probes; default 100 ms. Shorter when the wait's duration is what is measured. */
  intervalMs?: number;
}

/**
 * The tests' one wait: polls `probe` until it returns (or resolves) true, and returns how long
 * that took in ms; fails with the last probe error and the service's log otherwise. A test
 * waits for a signal this way, never for a fixed time.
 */
export async function waitUntil(
  what: string,
  probe: () => boolean | Promise<boolean>,
  timeoutMs: number,
  opts: Service | WaitOptions = {},
): Promise<number> {
  const { svc, intervalMs = 100 } = 'child' in opts ? { svc: opts } : opts;
  const t0 = Date.now();
  const deadline = t0 + timeoutMs;
  let lastError: unknown;
  for (;;) {
    if (svc?.exited()) throw new Error(`${svc.name} exited while waiting for ${what}; see ${svc.logFile}`);
    try {
      if (await probe()) return Date.now() - t0;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      const why = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${why}${svc ? `; see ${svc.logFile}` : ''}`,
      );
    }
    await sleep(intervalMs);
  }
}

/**
 * A pause that stands for work (a slow reconcile, a client's think time) or paces a loop
 * of requests; never a wait for the system to have done something (that is waitUntil).
 */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A fresh scratch directory under .run/ for one service instance. */
export function scratchDir(prefix: string): string {
  const dir = join(
    runDir,
    'data',
    `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`,
  );
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * A fresh scratch directory for files another user must reach (PostgreSQL running as
 * `postgres`, a pod's processes running as its runAsUser). Not under .run/: the checkout may
 * sit where only its owner can enter (`/root/nox`, a `mktemp -d` folder), so it goes under the
 * system's temporary directory, searchable by everyone, and belongs to `owner` when given.
 * The caller removes it.
 */
export function sharedScratchDir(prefix: string, owner?: { uid: number; gid: number }): string {
  const dir = mkdtempSync(join(tmpdir(), `nox-${prefix}-`));
  chmodSync(dir, 0o755);
  if (owner) chownSync(dir, owner.uid, owner.gid);
  return dir;
}
