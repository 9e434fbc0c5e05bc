import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { testLog } from '../harness/log.js';
import { waitUntil } from '../harness/process.js';
import { NETWORK } from './addresses.js';
import { api } from './api.js';
import { diffSnapshots, hostSnapshot } from './hostState.js';
import { NODE_IMAGES, startNode, type TestNode } from './node.js';

/**
 * The real node does what users' clusters do: pods from a locally built image, Services
 * with DNS names, claims with real volumes, replacement of deleted pods and restart of killed
 * containers; and it leaves the host as it found it.
 */
const NS = 'node-proof';
let node: TestNode;
let stopped = false;

interface Pod {
  metadata: { name: string; uid: string; labels?: Record<string, string> };
  status?: {
    podIP?: string;
    phase?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { name: string; restartCount: number; containerID?: string; ready: boolean }[];
  };
}

const ready = (p: Pod) =>
  p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

async function pods(selector: string): Promise<Pod[]> {
  const res = await api<{ items: Pod[] }>(
    node.creds,
    'GET',
    `/api/v1/namespaces/${NS}/pods?labelSelector=${encodeURIComponent(selector)}`,
  );
  return res.body.items ?? [];
}

async function readyPods(selector: string, count: number, timeoutMs: number): Promise<Pod[]> {
  let found: Pod[] = [];
  await waitUntil(
    `${count} Ready pod(s) ${selector}`,
    async () => {
      found = (await pods(selector)).filter(ready);
      return found.length === count;
    },
    timeoutMs,
  );
  return found;
}

async function getJson(url: string): Promise<Record<string, unknown>> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  const body = (await res.json()) as Record<string, unknown>;
  if (!res.ok) throw new Error(`${url}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

const probeContainer = (env: Record<string, string> = {}) => ({
  name: 'probe',
  image: NODE_IMAGES.probe.ref,
  imagePullPolicy: 'Never',
  env: Object.entries(env).map(([name, value]) => ({ name, value })),
  ports: [{ name: 'http', containerPort: 8080 }],
  readinessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1 },
  securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true },
});

const manifests = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
  {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'probe', namespace: NS },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: 'probe' } },
      template: {
        metadata: { labels: { app: 'probe' } },
        spec: { terminationGracePeriodSeconds: 1, containers: [probeContainer()] },
      },
    },
  },
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'probe', namespace: NS },
    spec: { type: 'NodePort', selector: { app: 'probe' }, ports: [{ port: 80, targetPort: 'http' }] },
  },
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'keeper', namespace: NS },
    spec: { clusterIP: 'None', selector: { app: 'keeper' }, ports: [{ port: 80, targetPort: 'http' }] },
  },
  {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: { name: 'keeper', namespace: NS },
    spec: {
      serviceName: 'keeper',
      replicas: 1,
      selector: { matchLabels: { app: 'keeper' } },
      template: {
        metadata: { labels: { app: 'keeper' } },
        spec: {
          terminationGracePeriodSeconds: 1,
          containers: [
            {
              ...probeContainer({ DATA_DIR: '/data' }),
              volumeMounts: [{ name: 'data', mountPath: '/data' }],
            },
          ],
        },
      },
      volumeClaimTemplates: [
        {
          metadata: { name: 'data' },
          spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '64Mi' } } },
        },
      ],
    },
  },
];

describe('the test node', () => {
  beforeAll(async () => {
    node = await startNode();
    testLog('node start: %d ms', node.startMs);
    await node.kubectl(['apply', '-f', '-'], { input: manifests.map((m) => stringify(m)).join('---\n') });
    // Long enough to wait for another file's node to stop first (startNode's lock, 20 min).
  }, 25 * 60_000);

  afterAll(async () => {
    if (!stopped) await node?.stop();
  }, 120_000);

  it('runs a Deployment of a locally built image, reachable from the host by pod IP, ClusterIP and NodePort', async () => {
    const [pod] = await readyPods('app=probe', 1, 120_000);
    const svc = await api<{ spec: { clusterIP: string; ports: { nodePort: number }[] } }>(
      node.creds,
      'GET',
      `/api/v1/namespaces/${NS}/services/probe`,
    );
    const clusterIp = svc.body.spec.clusterIP;
    const nodePort = svc.body.spec.ports[0]?.nodePort;
    expect(clusterIp.startsWith(node.serviceCidr.split('.').slice(0, 3).join('.'))).toBe(true);
    const byPod = await getJson(`http://${pod?.status?.podIP}:8080/whoami`);
    expect(byPod.hostname).toBe(pod?.metadata.name);
    // kube-proxy's rules may lag the endpoint by a sync: wait for them, then expect the pod.
    let byService: Record<string, unknown> = {};
    await waitUntil(
      'the ClusterIP answers',
      async () => {
        byService = await getJson(`http://${clusterIp}/whoami`);
        return true;
      },
      30_000,
    );
    expect(byService.hostname).toBe(pod?.metadata.name);
    const byNodePort = await getJson(`http://${node.nodeIp}:${nodePort}/whoami`);
    expect(byNodePort.hostname).toBe(pod?.metadata.name);
    // The apiserver reaches the kubelet (logs, exec, port-forward go that way).
    expect(await node.kubectl(['-n', NS, 'logs', pod?.metadata.name as string])).toContain(
      'probe listening on :8080',
    );
  }, 180_000);

  it('resolves a Service name in a pod through CoreDNS, and reaches it from the pod', async () => {
    const [pod] = await readyPods('app=probe', 1, 60_000);
    const svc = await api<{ spec: { clusterIP: string } }>(
      node.creds,
      'GET',
      `/api/v1/namespaces/${NS}/services/probe`,
    );
    const name = `probe.${NS}.svc.cluster.local`;
    const resolved = await getJson(`http://${pod?.status?.podIP}:8080/resolve?name=${name}`);
    expect(resolved.addresses).toEqual([svc.body.spec.clusterIP]);
    // The short name, through the search path the kubelet wrote into the pod's resolv.conf.
    const short = await getJson(`http://${pod?.status?.podIP}:8080/resolve?name=probe`);
    expect(short.addresses).toEqual([svc.body.spec.clusterIP]);
    // Pod → its own Service → itself: the hairpin through kube-proxy's DNAT on the bridge.
    const fetched = await getJson(
      `http://${pod?.status?.podIP}:8080/fetch?url=${encodeURIComponent(`http://${name}/whoami`)}`,
    );
    expect(fetched.status).toBe(200);
    expect(JSON.parse(fetched.body as string).hostname).toBe(pod?.metadata.name);
  }, 120_000);

  it("binds a StatefulSet's claim to a directory on the node that outlives the pod", async () => {
    const [first] = await readyPods('app=keeper', 1, 120_000);
    const claim = await api<{ spec: { volumeName: string }; status: { phase: string } }>(
      node.creds,
      'GET',
      `/api/v1/namespaces/${NS}/persistentvolumeclaims/data-keeper-0`,
    );
    expect(claim.body.status.phase).toBe('Bound');
    const dir = node.volumes.get(`${NS}/data-keeper-0`);
    expect(dir?.startsWith(node.volumesDir)).toBe(true);
    const startsFile = join(dir as string, 'starts');
    expect(readFileSync(startsFile, 'utf8').trim().split('\n')).toHaveLength(1);

    await node.kubectl(['-n', NS, 'delete', 'pod', 'keeper-0', '--wait=false']);
    let second: Pod | undefined;
    await waitUntil(
      'keeper-0 back, Ready, as a new pod',
      async () => {
        second = (await pods('app=keeper')).find((p) => ready(p) && p.metadata.uid !== first?.metadata.uid);
        return second !== undefined;
      },
      120_000,
    );
    const whoami = await getJson(`http://${second?.status?.podIP}:8080/whoami`);
    expect(whoami.starts).toBe(2);
    expect(readFileSync(startsFile, 'utf8').trim().split('\n')).toHaveLength(2);
  }, 300_000);

  it('replaces a deleted pod (ReplicaSet) and restarts a container killed through containerd (kubelet)', async () => {
    const [old] = await readyPods('app=probe', 1, 60_000);
    const deletedAt = Date.now();
    await node.kubectl(['-n', NS, 'delete', 'pod', old?.metadata.name as string, '--wait=false']);
    let replacement: Pod | undefined;
    await waitUntil(
      'a new Ready probe pod',
      async () => {
        replacement = (await pods('app=probe')).find((p) => ready(p) && p.metadata.uid !== old?.metadata.uid);
        return replacement !== undefined;
      },
      120_000,
    );
    testLog('node: deleted pod replaced and Ready after %d ms', Date.now() - deletedAt);

    const containerId = replacement?.status?.containerStatuses?.[0]?.containerID?.replace(
      'containerd://',
      '',
    );
    expect(containerId).toBeTruthy();
    const listed = await node.crictl(['ps', '--quiet', '--name', 'probe']);
    expect(listed).toContain(containerId);
    const killedAt = Date.now();
    await node.ctr(['tasks', 'kill', '--signal', 'SIGKILL', containerId as string]);
    await waitUntil(
      'the killed container restarted and Ready',
      async () => {
        const [p] = (await pods('app=probe')).filter((x) => x.metadata.uid === replacement?.metadata.uid);
        const status = p?.status?.containerStatuses?.[0];
        return (status?.restartCount ?? 0) >= 1 && status?.ready === true;
      },
      120_000,
    );
    testLog('node: killed container restarted and Ready after %d ms', Date.now() - killedAt);
  }, 300_000);

  it('stops without leaving anything on the host', async () => {
    // While it runs, the snapshot sees the node (so "no difference" after stop means something),
    // and kube-proxy's chains are in the node's namespace, not the host's.
    const during = diffSnapshots(node.hostBefore, hostSnapshot());
    testLog('node: host differences while running: %s', during.join('; '));
    expect(during.some((l) => l.startsWith(`+ netns: ${NETWORK.netns}`))).toBe(true);
    expect(during.some((l) => l.startsWith('+ links: nox-node-host@'))).toBe(true);
    expect(during.some((l) => l.startsWith('+ cgroups: ') && l.endsWith('/nox-node/kubepods'))).toBe(true);
    expect(during.some((l) => l.startsWith('+ mounts: ') && l.includes(node.dir))).toBe(true);
    // The kubelet's global kernel settings (restored by the teardown) where this host differs.
    if (!node.hostBefore.sysctls.includes('vm.overcommit_memory=1'))
      expect(during).toContain('+ sysctls: vm.overcommit_memory=1');
    expect(await node.exec('iptables-save', [])).toContain(':KUBE-SERVICES');
    expect(during.filter((l) => l.includes('KUBE-'))).toEqual([]);

    await node.stop();
    stopped = true;
    const diff = diffSnapshots(node.hostBefore, hostSnapshot());
    testLog('node: host differences after stop: %s', diff.length ? diff.join('; ') : 'none');
    // Other test files may start their own processes meanwhile; what a node could leave is
    // its namespace, links, routes, mounts, cgroups, kernel settings and host paths.
    const fromNode = diff.filter(
      (l) =>
        /nox-node|kubepods|cni|veth|netns|containerd|kubelet|172\.29\.213|10\.21[34]\./.test(l) ||
        l.includes(': sysctls:') ||
        /^[+-] (sysctls|netns|paths|iptables):/.test(l),
    );
    expect(fromNode).toEqual([]);
  }, 120_000);
});
