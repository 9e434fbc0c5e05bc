import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { testLog } from '../harness/log.js';
import { type Service, waitUntil } from '../harness/process.js';
import { repoRoot, runDir, tool } from '../harness/tools.js';
import { NETWORK } from './addresses.js';
import { type ApiCredentials, api } from './api.js';
import { type Containerd, startContainerd } from './containerd.js';
import { startControlPlane } from './controlPlane.js';
import { startDns } from './dns.js';
import { HOST_PATHS, type HostSnapshot, hostSnapshot, KUBELET_SYSCTLS, readSysctl } from './hostState.js';
import { startKubelet, startKubeProxy } from './kubelet.js';
import { acquireNodeLock } from './lock.js';
import { createNetwork, netnsRun } from './netns.js';
import { NodePki } from './pki.js';
import { type Provisioner, startProvisioner } from './volumes.js';

const exec = promisify(execFile);

/** The images scripts/tools.sh builds for the node (test/cluster/pause, test/cluster/probe). */
export const NODE_IMAGES = {
  pause: { ref: 'localhost/nox-pause:1', archive: join(repoRoot, '.tools', 'node-images', 'pause.tar') },
  probe: { ref: 'localhost/nox-probe:1', archive: join(repoRoot, '.tools', 'node-images', 'probe.tar') },
} as const;

export interface NodeOptions {
  /** OCI or docker image archives to import before the node is returned (e.g. .run/images/*.tar). */
  images?: string[];
  /** How long to wait for another test file's node to stop (one node per machine); default 20 min. */
  lockTimeoutMs?: number;
}

export interface TestNode {
  /** Admin (system:masters) kubeconfig file for kubectl, helm, common/kube; server https://<nodeIp>:6443. */
  readonly kubeconfigPath: string;
  /** The same kubeconfig as YAML text. */
  readonly kubeconfig: string;
  /** https://<nodeIp>:6443, reachable from the test process. */
  readonly server: string;
  /** The node's InternalIP: NodePorts answer here; pod and Service IPs are routed through it. */
  readonly nodeIp: string;
  readonly nodeName: string;
  readonly podCidr: string;
  readonly serviceCidr: string;
  /** The node's directory under .run/node/ (logs of every component, volumes). */
  readonly dir: string;
  /** Where the default StorageClass's volumes land on the node's disk. */
  readonly volumesDir: string;
  /** From nothing to a Ready node with CoreDNS answering, in ms (after any wait for another node's lock). */
  readonly startMs: number;
  /** Importing `NodeOptions.images` after that, in ms. */
  readonly importMs: number;
  /** The host before this node changed anything (hostState.ts), to compare after stop(). */
  readonly hostBefore: HostSnapshot;
  /** Claims the provisioner has given a directory (namespace/name → path). */
  readonly volumes: ReadonlyMap<string, string>;
  /** Runs a command in the node's network namespace (host filesystem); resolves to stdout. */
  exec(cmd: string, args: string[]): Promise<string>;
  /** Imports an OCI or docker image archive into containerd's k8s.io namespace; returns the names in it. */
  importImage(archive: string): Promise<string[]>;
  /** `ctr -n k8s.io` against the node's containerd; resolves to stdout. */
  ctr(args: string[]): Promise<string>;
  /** `crictl` against the node's CRI socket; resolves to stdout. */
  crictl(args: string[]): Promise<string>;
  /** `kubectl` with the admin kubeconfig; resolves to stdout, rejects with stderr on failure. */
  kubectl(args: string[], opts?: { input?: string; timeoutMs?: number }): Promise<string>;
  /** The admin's credentials for raw API calls. */
  readonly creds: ApiCredentials;
  /** Stops everything and puts the host back as it was (scripts/reap.sh does the same after a crash). */
  stop(): Promise<void>;
}

/** Node directories live here; scripts/reap.sh tears down any it finds with a state/ inside. */
export const nodesDir = join(runDir, 'node');
const teardownScript = join(repoRoot, 'test', 'cluster', 'teardown.sh');

async function teardown(dir: string): Promise<void> {
  const { stderr } = await exec('bash', [teardownScript, dir]).catch(
    (e: { stderr?: string; message: string }) => ({
      stderr: e.stderr ?? e.message,
    }),
  );
  if (stderr.trim()) testLog('node teardown %s: %s', dir, stderr.trim());
}

/**
 * What the teardown must undo, written before anything is changed, so that a crash at any
 * point leaves enough for scripts/reap.sh.
 */
function recordState(dir: string): void {
  const state = join(dir, 'state');
  mkdirSync(state, { recursive: true });
  writeFileSync(join(state, 'netns'), `${NETWORK.netns}\n`);
  writeFileSync(join(state, 'host-link'), `${NETWORK.hostLink}\n`);
  writeFileSync(join(state, 'cgroup-root'), `${NETWORK.cgroupRoot}\n`);
  const netnsBefore = existsSync('/run/netns') ? readdirSync('/run/netns') : [];
  writeFileSync(join(state, 'netns-before'), netnsBefore.map((n) => `${n}\n`).join(''));
  writeFileSync(join(state, 'sysctls'), KUBELET_SYSCTLS.map((n) => `${n} ${readSysctl(n)}\n`).join(''));
  writeFileSync(
    join(state, 'paths-created'),
    HOST_PATHS.filter((p) => !existsSync(p))
      .map((p) => `${p}\n`)
      .join(''),
  );
}

/**
 * The kubelet's cgroup root must exist in every hierarchy before it starts; cpuset's needs the
 * parent's cpus and mems or no task can join it.
 */
function createCgroupRoot(): void {
  for (const h of readdirSync('/sys/fs/cgroup')) {
    const dir = join('/sys/fs/cgroup', h, NETWORK.cgroupRoot);
    try {
      mkdirSync(dir, { recursive: true });
    } catch {
      continue;
    }
    if (h === 'cpuset') {
      for (const f of ['cpuset.cpus', 'cpuset.mems']) {
        writeFileSync(join(dir, f), readFileSync(join('/sys/fs/cgroup/cpuset', f), 'utf8'));
      }
    }
  }
}

/**
 * A real single-node Kubernetes inside a network namespace of its own: containerd + runc,
 * the CNI bridge, etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the kubelet,
 * kube-proxy (iptables), CoreDNS and a provisioner for claims. See test/cluster/README.md.
 */
export async function startNode(opts: NodeOptions = {}): Promise<TestNode> {
  for (const name of [
    'containerd',
    'runc',
    'ctr',
    'crictl',
    'kubelet',
    'kube-proxy',
    'kube-scheduler',
    'kubectl',
    'coredns',
  ]) {
    tool(name);
  }
  for (const image of Object.values(NODE_IMAGES)) {
    if (!existsSync(image.archive)) throw new Error(`${image.archive} is missing; run \`make tools\``);
  }
  const lockedAt = Date.now();
  const release = await acquireNodeLock(opts.lockTimeoutMs ?? 20 * 60_000);
  const t0 = Date.now();
  if (t0 - lockedAt > 1000) testLog('node: waited %d ms for another node to stop', t0 - lockedAt);
  // Whatever a killed run left (we hold the lock, so no live node owns it).
  mkdirSync(nodesDir, { recursive: true });
  for (const d of readdirSync(nodesDir)) await teardown(join(nodesDir, d));

  // The host as this node finds it (after the lock: another file's node is gone by now).
  const hostBefore = hostSnapshot();
  const dir = join(nodesDir, `${Date.now().toString(36)}-${process.pid}`);
  const volumesDir = join(dir, 'volumes');
  mkdirSync(join(dir, 'pki'), { recursive: true });
  mkdirSync(volumesDir, { recursive: true });
  recordState(dir);
  const services: Service[] = [];
  let containerd: Containerd | undefined;
  let provisioner: Provisioner | undefined;
  let creds: ApiCredentials | undefined;

  const stop = async (): Promise<void> => {
    provisioner?.stop();
    const kubelet = services.find((s) => s.name === 'node-kubelet');
    await kubelet?.stop(10_000);
    // Pods down through the CRI: CNI releases their addresses and containerd unmounts their
    // rootfs and removes their network namespaces. The teardown catches what this misses.
    if (containerd && !containerd.service.exited()) {
      await crictl(containerd.socket, ['rmp', '--all', '--force']).catch((e: Error) =>
        testLog('node stop: crictl rmp: %s', e.message),
      );
    }
    for (const s of [...services].reverse()) await s.stop(10_000);
    await containerd?.service.stop(10_000);
    await teardown(dir);
    release();
  };

  try {
    await createNetwork();
    createCgroupRoot();
    const pki = new NodePki(join(dir, 'pki'));
    await pki.initCa();
    containerd = await startContainerd(dir);
    const cd = containerd;
    await Promise.all(Object.values(NODE_IMAGES).map((i) => cd.importImage(i.archive)));
    const controlPlane = await startControlPlane(dir, pki);
    services.push(...controlPlane.services);
    creds = controlPlane.creds;
    const c = creds;
    const kubelet = await startKubelet(dir, pki, containerd.socket, c.server);
    services.push(kubelet);
    services.push(await startKubeProxy(dir, pki, c.server));
    await waitUntil(
      `node ${NETWORK.nodeName} Ready`,
      async () => {
        const node = await api<{ status?: { conditions?: { type: string; status: string }[] } }>(
          c,
          'GET',
          `/api/v1/nodes/${NETWORK.nodeName}`,
        );
        return node.body.status?.conditions?.some((x) => x.type === 'Ready' && x.status === 'True') ?? false;
      },
      120_000,
      kubelet,
    );
    services.push(await startDns(dir, pki, c));
    provisioner = await startProvisioner(c, volumesDir);
    const startMs = Date.now() - t0;
    testLog('node %s ready with CoreDNS answering after %d ms (%s)', NETWORK.nodeName, startMs, dir);
    const t1 = Date.now();
    for (const image of opts.images ?? []) await cd.importImage(image);
    const importMs = Date.now() - t1;
    if (opts.images?.length)
      testLog('node: %d image archive(s) imported in %d ms', opts.images.length, importMs);
    const kubeconfigPath = controlPlane.kubeconfigPath;
    const prov = provisioner;
    return {
      kubeconfigPath,
      kubeconfig: readFileSync(kubeconfigPath, 'utf8'),
      server: c.server,
      nodeIp: NETWORK.nodeIp,
      nodeName: NETWORK.nodeName,
      podCidr: NETWORK.podCidr,
      serviceCidr: NETWORK.serviceCidr,
      dir,
      volumesDir,
      startMs,
      importMs,
      hostBefore,
      volumes: prov.made,
      creds: c,
      exec: (cmd, args) => netnsRun(cmd, args),
      importImage: (archive) => cd.importImage(archive),
      ctr: (args) => cd.ctr(args),
      crictl: (args) => crictl(cd.socket, args),
      kubectl: (args, o) => kubectl(kubeconfigPath, args, o),
      stop,
    };
  } catch (e) {
    testLog('node start failed: %s; logs in %s', (e as Error).message, dir);
    await stop();
    throw e;
  }
}

async function crictl(socket: string, args: string[]): Promise<string> {
  const endpoint = `unix://${socket}`;
  const { stdout } = await exec(
    tool('crictl'),
    ['--runtime-endpoint', endpoint, '--image-endpoint', endpoint, '--timeout', '30s', ...args],
    { maxBuffer: 64 * 1024 * 1024 },
  );
  return stdout;
}

function kubectl(
  kubeconfig: string,
  args: string[],
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      tool('kubectl'),
      ['--kubeconfig', kubeconfig, ...args],
      { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) =>
        err ? reject(new Error(`kubectl ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}
