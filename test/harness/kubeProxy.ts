import { connect, createServer, type Server, type Socket } from 'node:net';
import type { V1Pod, V1Service } from '@kubernetes/client-node';
import { pods as podsType, services as servicesType } from '../../common/kube/resources.js';
import type { Kube } from './kube.js';
import { serviceEndpoints } from './kubelet/endpoints.js';
import { itemOf, itemsOf, keyOf, watchAll } from './kubelet/watch.js';

/**
 * A stand-in for kube-proxy, and only for that: for every TCP port of every Service with a
 * ClusterIP (loopback addresses here: the harness's Service CIDR is 127.96.0.0/24) it listens
 * on clusterIP:port and forwards each new connection to a ready endpoint, round-robin, as
 * kube-proxy's DNAT rules would (the source address is kept when it is a loopback one, so a
 * pod's connection still comes from its pod IP). With no ready endpoint it falls back to
 * serving, terminating ones (as kube-proxy does), and with none at all it resets the
 * connection at once (kube-proxy's REJECT). Connections already forwarded stay when their
 * endpoint goes away (kube-proxy leaves conntrack flows alone); they are closed when the
 * Service port itself goes.
 *
 * Endpoints are computed from Pods (selector, readiness, targetPort by number or by container
 * port name), not read from EndpointSlices: the API server refuses loopback addresses in
 * EndpointSlices, so kube-controller-manager cannot write them for these pods.
 *
 * Skipped: `default/kubernetes` (no endpoints can be written for it either; the API server is
 * reached directly), UDP/SCTP ports, session affinity, NodePorts, external IPs.
 */
export interface KubeProxyOptions {
  /** Only Services in these namespaces (default: all). */
  namespaces?: string[];
}

export interface KubeProxy {
  /** What is listened on: `<clusterIP>:<port>` → `<namespace>/<service>`. */
  listeners(): Record<string, string>;
  /** Stops listening and closes every forwarded connection. */
  stop(): Promise<void>;
}

interface Listener {
  readonly svcKey: string;
  readonly port: number;
  readonly server: Server;
  readonly sockets: Set<Socket>;
  /** Resolves once listening, or once listening failed (retried later). */
  readonly ready: Promise<void>;
  rr: number;
}

const LOOPBACK_V4 = /^127\.\d+\.\d+\.\d+$/;

export async function startKubeProxy(kube: Kube, opts: KubeProxyOptions = {}): Promise<KubeProxy> {
  const kc = kube.kubeConfig();
  const ac = new AbortController();
  const namespaces = opts.namespaces ? new Set(opts.namespaces) : undefined;
  const label = 'kube-proxy stand-in';
  const listeners = new Map<string, Listener>(); // by `${ip}:${port}`
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const schedule = (delayMs = 0) => {
    if (timer || stopped) return;
    timer = setTimeout(() => {
      timer = undefined;
      sync();
    }, delayMs);
  };
  const services = watchAll<V1Service>(kc, servicesType, {}, ac.signal, label, () => schedule());
  // Endpoints are looked up per connection: pod changes need no listener change.
  const pods = watchAll<V1Pod>(kc, podsType, {}, ac.signal, label);

  const proxied = (svc: V1Service) => {
    const ns = svc.metadata?.namespace ?? '';
    const ip = svc.spec?.clusterIP;
    if (namespaces && !namespaces.has(ns)) return false;
    if (ns === 'default' && svc.metadata?.name === 'kubernetes') return false;
    return !!ip && ip !== 'None' && svc.spec?.type !== 'ExternalName' && LOOPBACK_V4.test(ip);
  };

  const forward = (l: Listener, client: Socket) => {
    const svc = itemOf<V1Service>(services, l.svcKey);
    const port = svc?.spec?.ports?.find((p) => p.port === l.port && (p.protocol ?? 'TCP') === 'TCP');
    const eps = svc && port ? serviceEndpoints(svc, itemsOf<V1Pod>(pods), port) : [];
    let pool = eps.filter((e) => e.ready);
    if (pool.length === 0) pool = eps.filter((e) => e.serving && e.terminating);
    if (pool.length === 0) {
      client.resetAndDestroy();
      return;
    }
    const ep = pool[l.rr++ % pool.length]!;
    const src = client.remoteAddress;
    const upstream = connect({
      host: ep.ip,
      port: ep.port,
      allowHalfOpen: true,
      ...(src && LOOPBACK_V4.test(src) ? { localAddress: src } : {}),
    });
    l.sockets.add(client);
    l.sockets.add(upstream);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.resetAndDestroy());
    client.on('close', () => {
      l.sockets.delete(client);
      upstream.destroy();
    });
    upstream.on('close', () => {
      l.sockets.delete(upstream);
      client.destroy();
    });
    client.pipe(upstream);
    upstream.pipe(client);
  };

  const close = (key: string, l: Listener) => {
    listeners.delete(key);
    const closed = new Promise<void>((r) => l.server.close(() => r()));
    for (const s of l.sockets) s.destroy();
    l.sockets.clear();
    return closed;
  };

  const open = (key: string, ip: string, port: number, svcKey: string) => {
    let done!: () => void;
    const ready = new Promise<void>((r) => {
      done = r;
    });
    const l: Listener = {
      svcKey,
      port,
      server: createServer({ allowHalfOpen: true }, (client) => forward(l, client)),
      sockets: new Set(),
      ready,
      rr: 0,
    };
    listeners.set(key, l);
    l.server.once('listening', done);
    l.server.once('error', (e) => {
      // EADDRINUSE: another test process's proxy holds this ClusterIP:port (its cluster has
      // the same Service CIDR). Retry: its Service may go away.
      console.error(`${label}: cannot listen on ${key} for ${svcKey}: ${(e as Error).message}; retrying`);
      if (listeners.get(key) === l) listeners.delete(key);
      done();
      schedule(1000);
    });
    l.server.listen({ host: ip, port, exclusive: true });
  };

  const sync = () => {
    if (stopped) return;
    const desired = new Map<string, { ip: string; port: number; svcKey: string }>();
    for (const svc of itemsOf<V1Service>(services)) {
      if (!proxied(svc)) continue;
      for (const p of svc.spec?.ports ?? []) {
        if ((p.protocol ?? 'TCP') !== 'TCP') continue;
        const ip = svc.spec!.clusterIP!;
        desired.set(`${ip}:${p.port}`, { ip, port: p.port, svcKey: keyOf(svc) });
      }
    }
    for (const [key, l] of listeners) if (desired.get(key)?.svcKey !== l.svcKey) void close(key, l);
    for (const [key, d] of desired) if (!listeners.has(key)) open(key, d.ip, d.port, d.svcKey);
  };

  await Promise.all([services.whenSynced(), pods.whenSynced()]);
  sync();
  await Promise.all([...listeners.values()].map((l) => l.ready));

  return {
    listeners: () => Object.fromEntries([...listeners].map(([k, l]) => [k, l.svcKey])),
    async stop() {
      stopped = true;
      clearTimeout(timer);
      ac.abort();
      await Promise.all([...listeners].map(([key, l]) => close(key, l)));
    },
  };
}
