import { createServer } from 'node:net';

/**
 * A free TCP port on 127.0.0.1. Chosen at random below the kernel's ephemeral range
 * (32768+) rather than by bind(0): the kernel readily hands a just-released port to the
 * next caller, so a test that stops a server and expects "connection refused" could find
 * another test file's server (running in parallel) on that very port.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await isFree(port, host)) return port;
  }
  return kernelPort(host);
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
