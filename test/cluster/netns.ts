import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { NETWORK, ROUTED_FROM_HOST } from './addresses.js';

const exec = promisify(execFile);

/** Runs a command in the node's network namespace only (not `ip netns exec`, see below). */
export function inNetns(cmd: string, args: string[]): [string, string[]] {
  // `ip netns exec` would also give the process a mount namespace of its own with a fresh
  // /sys: the kubelet would lose /sys/fs/cgroup, and mounts made by the kubelet would be
  // invisible to containerd. nsenter --net changes the network namespace and nothing else.
  return ['nsenter', [`--net=/run/netns/${NETWORK.netns}`, '--', cmd, ...args]];
}

export async function netnsRun(cmd: string, args: string[]): Promise<string> {
  const [c, a] = inNetns(cmd, args);
  return (await exec(c, a, { maxBuffer: 64 * 1024 * 1024 })).stdout;
}

async function ip(...args: string[]): Promise<void> {
  await exec('ip', args);
}

/**
 * The node's network namespace, joined to the host by a veth pair. The host gets routes to
 * the pod and Service ranges through it and nothing else changes in the host's namespace:
 * the bridge, the pods' veths, kube-proxy's chains and ip_forward all live in the node's.
 */
export async function createNetwork(): Promise<void> {
  const { stdout: routes } = await exec('ip', ['route', 'show']);
  for (const cidr of [
    ...ROUTED_FROM_HOST,
    `${NETWORK.hostIp.replace(/\.\d+$/, '.0')}/${NETWORK.linkPrefix}`,
  ]) {
    if (routes.includes(cidr))
      throw new Error(`the host already routes ${cidr}; a node is running or was left (make reap)`);
  }
  await ip('netns', 'add', NETWORK.netns);
  await ip('link', 'add', NETWORK.hostLink, 'type', 'veth', 'peer', 'name', NETWORK.nodeLink);
  await ip('link', 'set', NETWORK.nodeLink, 'netns', NETWORK.netns);
  await ip('addr', 'add', `${NETWORK.hostIp}/${NETWORK.linkPrefix}`, 'dev', NETWORK.hostLink);
  await ip('link', 'set', NETWORK.hostLink, 'up');
  const ns = (...args: string[]) => ip('-n', NETWORK.netns, ...args);
  await ns('link', 'set', 'lo', 'up');
  await ns('addr', 'add', `${NETWORK.nodeIp}/${NETWORK.linkPrefix}`, 'dev', NETWORK.nodeLink);
  await ns('link', 'set', NETWORK.nodeLink, 'up');
  // Components that look for "the host's default interface" (kube-proxy, the kubelet's node
  // address checks) find the veth; nothing is reachable beyond the host's end of it.
  await ns('route', 'add', 'default', 'via', NETWORK.hostIp);
  for (const cidr of ROUTED_FROM_HOST)
    await ip('route', 'add', cidr, 'via', NETWORK.nodeIp, 'dev', NETWORK.hostLink);
  // Per-namespace settings, gone with the namespace: forwarding between the veth and the pod
  // bridge, and bridged pod-to-pod traffic through kube-proxy's rules (a Service whose
  // endpoint is on the same bridge as the client).
  await netnsRun('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
  await netnsRun('sysctl', ['-q', '-w', 'net.bridge.bridge-nf-call-iptables=1']);
}
