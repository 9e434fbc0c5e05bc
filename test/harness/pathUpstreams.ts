import { existsSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { type Service, scratchDir, start, waitUntil } from './process.js';
import { repoRoot, tool } from './tools.js';

/**
 * Upstream servers of different stacks for the path differential test: each serves the same
 * resources (admin, public, reports, api, health, other) by its own routing rules and names
 * the one that answered in an `x-resource` header.
 *
 * - go: Go's net/http ServeMux (case-sensitive, ";" kept in a segment's name);
 * - tomcat: embedded Tomcat (path parameters dropped from every segment);
 * - lenient: a Node http server routing the way Express does by default (case-insensitive,
 *   a trailing slash ignored).
 */
export interface PathUpstream {
  readonly name: 'go' | 'tomcat' | 'lenient';
  readonly port: number;
  stop(): Promise<void>;
}

/** One plain request, answered by the resource's name (undefined: no resource served). */
export async function servedBy(port: number, method: string, path: string): Promise<string | undefined> {
  const r = await rawRequest(port, method, path);
  return r.status >= 200 && r.status < 300 ? r.headers['x-resource'] : undefined;
}

export interface RawResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | undefined>>;
  readonly body: string;
}

/**
 * A request whose path goes on the wire exactly as given (fetch would resolve dot segments
 * and re-encode first, so the cases under test would never leave the client).
 */
export function rawRequest(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: Object.fromEntries(
            Object.entries(res.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : v]),
          ),
          body: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function startProcess(
  name: PathUpstream['name'],
  command: string,
  args: (port: number) => string[],
): Promise<PathUpstream> {
  const port = await freePort();
  const service: Service = start(`path-upstream-${name}`, command, args(port));
  await waitUntil(
    `the ${name} upstream to serve`,
    async () => (await servedBy(port, 'GET', '/health')) === 'health',
    60_000,
    service,
  );
  return { name, port, stop: () => service.stop() };
}

export function startGoUpstream(): Promise<PathUpstream> {
  return startProcess('go', tool('nox-path-upstream-go'), (port) => [String(port)]);
}

export function startTomcatUpstream(): Promise<PathUpstream> {
  const dir = join(repoRoot, '.tools', 'path-upstreams', 'tomcat');
  if (!existsSync(join(dir, 'classes', 'PathServer.class')))
    throw new Error(`embedded Tomcat is not installed under ${dir}; run \`make tools\``);
  const base = scratchDir('tomcat');
  return startProcess('tomcat', 'java', (port) => [
    '-Xmx96m',
    '-XX:TieredStopAtLevel=1',
    '-cp',
    `${join(dir, 'lib', '*')}:${join(dir, 'classes')}`,
    'PathServer',
    String(port),
    base,
  ]);
}

/** Express's default routing: case-insensitive, "strict" off (a trailing slash is ignored). */
export async function startLenientUpstream(): Promise<PathUpstream> {
  const route = (raw: string): string => {
    let p = raw.split('?')[0]!.toLowerCase();
    if (p.length > 1 && p.endsWith('/')) p = p.slice(0, -1);
    const under = (prefix: string) => p === prefix || p.startsWith(`${prefix}/`);
    if (under('/admin')) return 'admin';
    if (under('/public/reports')) return 'reports';
    if (under('/public')) return 'public';
    if (under('/api')) return 'api';
    if (p === '/health') return 'health';
    return 'other';
  };
  const server: Server = createServer((req, res) => {
    req.resume();
    const name = route(req.url ?? '/');
    res.setHeader('x-resource', name);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ resource: name }));
  });
  const port = await freePort();
  await new Promise<void>((res) => server.listen(port, '127.0.0.1', res));
  return {
    name: 'lenient',
    port,
    stop: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}
