import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { runDir } from './tools.js';

/**
 * A free TCP port on 127.0.0.1, never handed out twice within an hour by any test process of
 * this checkout. Chosen at random below the kernel's ephemeral range (32768+) rather than by
 * bind(0), and claimed by an exclusive file in .run/ports: a test that kills a server and
 * restarts it on the same port (or expects "connection refused" there) must not find another
 * test file's server, started in the meantime by a parallel worker, on that very port. A
 * clean-clone run saw a PostgreSQL the usage-rollup test had killed answered by another
 * file's PostgreSQL on its port.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let i = 0; i < 400; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (claim(port) && (await isFree(port, host))) return port;
  }
  for (;;) {
    const port = await kernelPort(host);
    if (claim(port)) return port;
  }
}

const claims = join(runDir, 'ports');
const CLAIM_MS = 3_600_000;

/** Claims `port` for this process (O_EXCL); a claim older than an hour has lapsed. */
function claim(port: number): boolean {
  mkdirSync(claims, { recursive: true });
  const file = join(claims, String(port));
  try {
    writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
    return true;
  } catch {
    try {
      if (Date.now() - statSync(file).mtimeMs < CLAIM_MS) return false;
      writeFileSync(file, `${process.pid}\n`);
      return true;
    } catch {
      return false;
    }
  }
}

function kernelPort(host: string): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('no port'));
        return;
      }
      srv.close(() => resolvePort(addr.port));
    });
  });
}

/**
 * Several distinct free ports. Redis Cluster needs port+10000 free as well (its bus port),
 * so callers can ask for ports below 55535 with `busOffset`.
 */
export async function freePorts(n: number, opts: { busOffset?: number } = {}): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) {
    const p = await freePort();
    if (opts.busOffset !== undefined) {
      if (p + opts.busOffset > 65535) continue;
      if (out.has(p + opts.busOffset) || [...out].some((q) => q + opts.busOffset! === p)) continue;
      if (!(await isFree(p + opts.busOffset))) continue;
    }
    out.add(p);
  }
  return [...out];
}

export function isFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => res(false));
    srv.listen(port, host, () => srv.close(() => res(true)));
  });
}

export async function waitForPort(port: number, timeoutMs: number, host = '127.0.0.1'): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect({ port, host });
      s.once('connect', () => {
        s.destroy();
        res(true);
      });
      s.once('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
