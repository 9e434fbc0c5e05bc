import type { KeyObject } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { cpus } from 'node:os';
import { Worker } from 'node:worker_threads';
import { CheckRequest } from '../../proto/envoy.js';
import { realisticCheckRequest } from './requests.js';

/**
 * Signed-in callers for the benches: an issuer whose JWKS the sidecar fetches, RS256 access
 * tokens minted in bulk, and the load files that send one token per call (jwt and quota).
 */

export const AUDIENCE = 'https://api.bench.test';
export const KID = 'bench-key-1';

/** An OAuth2Provider `bench` for `issuer`, its JWKS named outright (no discovery). */
export function benchProvider(issuer: string, jwksUri: string): string {
  return `apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: bench }
spec:
  type: oidc
  issuer: "${issuer}"
  clientId: bench
  audiences: ["${AUDIENCE}"]
  allowedAlgorithms: [RS256]
  endpoints: { jwks: "${jwksUri}" }
`;
}

// ---------------------------------------------------------------------------------------
// The issuer: an RSA-2048 key, its JWKS served over HTTP, tokens signed in worker threads.

export interface Issuer {
  readonly issuer: string;
  readonly jwksUri: string;
  /** Requests to the JWKS endpoint since start. */
  jwksHits(): number;
  close(): Promise<void>;
}

export async function serveJwks(publicKey: KeyObject): Promise<Issuer> {
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid: KID, alg: 'RS256', use: 'sig' };
  const body = JSON.stringify({ keys: [jwk] });
  let hits = 0;
  const server: Server = createServer((req, res) => {
    if (req.url !== '/jwks') {
      res.writeHead(404).end();
      return;
    }
    hits++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  const issuer = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  return {
    issuer,
    jwksUri: `${issuer}/jwks`,
    jwksHits: () => hits,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// A worker's whole program (CommonJS, run by `eval`): RS256 compact JWTs for subjects
// from..to-1, newline-separated. An RSA-2048 signature costs ~0.3 ms, so the pool is
// signed on every core.
const mintWorker = `
const { parentPort, workerData: w } = require('node:worker_threads');
const { createPrivateKey, sign } = require('node:crypto');
const key = createPrivateKey(w.pem);
const header = Buffer.from(JSON.stringify({ alg: 'RS256', typ: 'at+jwt', kid: w.kid })).toString('base64url');
const out = [];
for (let i = w.from; i < w.to; i++) {
  const claims = { ...w.claims, sub: 'user-' + i, jti: 'bench-' + i };
  const input = header + '.' + Buffer.from(JSON.stringify(claims)).toString('base64url');
  out.push(input + '.' + sign('sha256', Buffer.from(input), key).toString('base64url'));
}
parentPort.postMessage(out.join('\\n'));
`;

/** `count` distinct valid access tokens (subjects user-<first>..), shaped like an OpenID provider's. */
export async function mint(
  privateKey: KeyObject,
  issuer: string,
  first: number,
  count: number,
): Promise<string[]> {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer,
    aud: AUDIENCE,
    iat: now,
    exp: now + 2 * 3600,
    client_id: 'bench-client',
    scope: 'openid api:read api:write',
  };
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' });
  const workers = Math.max(1, Math.min(cpus().length, Math.ceil(count / 1000)));
  const per = Math.ceil(count / workers);
  const parts = await Promise.all(
    Array.from({ length: workers }, (_, w) => {
      const from = first + w * per;
      const to = Math.min(first + count, from + per);
      return new Promise<string>((resolve, reject) => {
        const worker = new Worker(mintWorker, {
          eval: true,
          workerData: { pem, kid: KID, claims, from, to },
        });
        worker.once('message', (m: string) => resolve(m));
        worker.once('error', reject);
        worker.once('exit', (code) => {
          if (code !== 0) reject(new Error(`token worker exited with ${code}`));
        });
      });
    }),
  );
  return parts.flatMap((p) => (p === '' ? [] : p.split('\n')));
}

// ---------------------------------------------------------------------------------------
// Load files. ghz: CheckRequests as length-prefixed protobuf (-B), which ghz decodes once
// before the run and sends round-robin by request number; as JSON (-D) it would parse each
// request on first use, which with a new token per call makes ghz the bottleneck. wrk: the
// tokens, one per line, made into requests by the Lua script before the run and sent in order.

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

export function writeGhzData(file: string, path: string, tokens: readonly string[]): void {
  const req = realisticCheckRequest(path) as {
    attributes: { request: { time: unknown; http: { headers: Record<string, string> } } };
  };
  // fromObject takes a Timestamp as seconds/nanos, not as its JSON string.
  req.attributes.request.time = { seconds: Math.floor(Date.parse('2026-11-25T12:00:00Z') / 1000), nanos: 0 };
  const headers = req.attributes.request.http.headers;
  const fd = openSync(file, 'w');
  try {
    for (let i = 0; i < tokens.length; i += 1000) {
      const chunk = tokens.slice(i, i + 1000).flatMap((t) => {
        headers.authorization = `Bearer ${t}`;
        const msg = Buffer.from(CheckRequest.encode(CheckRequest.fromObject(req)).finish());
        return [varint(msg.length), msg];
      });
      writeSync(fd, Buffer.concat(chunk));
    }
  } finally {
    closeSync(fd);
  }
}

/** wrk: every request of the file's tokens formatted up front, then sent in order, wrapping round at the end. */
export function wrkLua(tokenFile: string): string {
  return `
local reqs = {}
for line in io.lines(${JSON.stringify(tokenFile)}) do
  reqs[#reqs + 1] = wrk.format(nil, nil, { ["Host"] = wrk.host .. ":" .. wrk.port, ["authorization"] = "Bearer " .. line })
end
local n = #reqs
local i = 0
request = function()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end
`;
}
