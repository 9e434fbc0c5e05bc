import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { openPolicy, policyDir } from '../harness/policies.js';
import { waitUntil } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { startUpstream, type Upstream } from '../harness/upstream.js';

// A rolling update as Kubernetes does it, through real Envoy: the old ext_authz instance is
// taken out of the Service first (new connections go to the new one; open ones stay where
// they are, as kube-proxy's conntrack keeps them), then gets SIGTERM while Envoy is still
// sending it checks on its open HTTP/2 connection. Not one request may fail. The sidecar's
// GOAWAY names the last check it read; the ones Envoy sent after that are refused unread (Node's
// HTTP/2 has no shutdown notice that would keep accepting them), and Envoy, configured as
// examples/gateways/envoy.yaml is (retry on refused-stream), sends them again on a new
// connection, to the new instance. Without that retry this fails in most runs.

/** A ClusterIP Service in miniature: each new connection goes to the current backend. */
interface ServiceProxy {
  readonly port: number;
  /** Connections opened to each backend port so far. */
  readonly connections: Map<number, number>;
  target: number;
  close(): Promise<void>;
}

function serviceProxy(target: number): Promise<ServiceProxy> {
  const sockets = new Set<Socket>();
  const connections = new Map<number, number>();
  const self = { target, connections } as ServiceProxy & { server: Server };
  const server = createServer((client) => {
    const port = self.target;
    connections.set(port, (connections.get(port) ?? 0) + 1);
    const backend = connect(port, '127.0.0.1');
    for (const s of [client, backend]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        backend.destroy();
      });
    }
    // A half-close passes through (the sidecar's FIN after its final GOAWAY reaches Envoy).
    client.pipe(backend);
    backend.pipe(client);
  });
  return new Promise((res) =>
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      Object.assign(self, {
        port: typeof addr === 'object' && addr ? addr.port : 0,
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => done());
          }),
      });
      res(self);
    }),
  );
}

describe('a rolling update of the ext_authz instances behind Envoy', () => {
  let upstream: Upstream;
  let proxy: ServiceProxy;
  let envoy: Envoy;
  let current: Sidecar;
  const policyPath = policyDir('drain', openPolicy);

  beforeAll(async () => {
    upstream = await startUpstream();
    current = await startSidecar({ policyPath });
    proxy = await serviceProxy(current.grpcPort);
    envoy = await startEnvoy({ authzPort: proxy.port, upstreamPort: upstream.port, authzTimeoutMs: 2000 });
  }, 60_000);

  afterAll(async () => {
    await envoy?.stop();
    await current?.stop();
    await proxy?.close();
    await upstream?.close();
  });

  it('answers every request while instances are replaced under steady traffic', async () => {
    const counts = new Map<string, number>();
    let stopping = false;
    const loop = async () => {
      while (!stopping) {
        const key = await fetch(`${envoy.url}/items`, { signal: AbortSignal.timeout(10_000) })
          .then(async (r) => {
            await r.arrayBuffer();
            return String(r.status);
          })
          .catch((e: unknown) => `error: ${(e as Error).message}`);
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
    };
    // Enough callers that Envoy always has checks in flight on its connection to the sidecar.
    const loops = Array.from({ length: 24 }, loop);
    const answered = () => [...counts.values()].reduce((a, b) => a + b, 0);
    try {
      await waitUntil('traffic flowing', async () => (counts.get('200') ?? 0) > 100, 30_000);
      for (let round = 0; round < 4; round++) {
        const next = await startSidecar({ policyPath });
        proxy.target = next.grpcPort; // out of the Service's endpoints: new connections go to next
        const before = answered();
        await current.stop(); // SIGTERM, with Envoy's connection still open and busy
        current = next;
        // Envoy reconnected (through the proxy, to the new instance) and traffic goes on.
        await waitUntil(
          `round ${round}: traffic through the new instance`,
          async () => (proxy.connections.get(next.grpcPort) ?? 0) > 0 && answered() > before + 200,
          30_000,
        );
      }
    } finally {
      stopping = true;
      await Promise.all(loops);
    }
    expect(Object.fromEntries(counts)).toEqual({ '200': counts.get('200') });
    expect(counts.get('200')).toBeGreaterThan(800);
  }, 120_000);
});
