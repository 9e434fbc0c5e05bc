import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Kernel settings the kubelet sets at start (pkg/kubelet/cm's setupKernelTunables) when
 * protectKernelDefaults is off, which it must be here: they are global, not per network
 * namespace, so startNode records them and the teardown puts them back. ip_forward and
 * bridge-nf-call-iptables are per namespace on this kernel; they are listed so that the
 * before/after comparison shows the host's own did not change.
 */
export const KUBELET_SYSCTLS = [
  'vm.overcommit_memory',
  'vm.panic_on_oom',
  'kernel.panic',
  'kernel.panic_on_oops',
  'kernel.keys.root_maxkeys',
  'kernel.keys.root_maxbytes',
] as const;
const WATCHED_SYSCTLS = [...KUBELET_SYSCTLS, 'net.ipv4.ip_forward', 'net.bridge.bridge-nf-call-iptables'];

/**
 * Host paths the node's components create on their own whatever their configuration says:
 * libcni's result cache, the containerd shims' socket directory, the kubelet's container log
 * links, the directory `ip netns` keeps namespaces in. Removed at teardown when they did not
 * exist before.
 */
export const HOST_PATHS = [
  '/var/lib/cni',
  '/run/containerd',
  '/var/log/containers',
  '/var/log/pods',
  '/run/netns',
  '/var/lib/kubelet',
  // The device-plugin socket's directory is fixed whatever --root-dir says.
  '/var/lib/kubelet/device-plugins',
  '/etc/cni',
  '/opt/cni',
];

export function readSysctl(name: string): string | undefined {
  const path = join('/proc/sys', ...name.split('.'));
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** What a node could leave behind on the host, as comparable lines (sorted). */
export interface HostSnapshot {
  mounts: string[];
  cgroups: string[];
  sysctls: string[];
  netns: string[];
  links: string[];
  routes: string[];
  iptables: string[];
  paths: string[];
}

function lines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .sort();
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

/** Cgroup directories two levels deep in every hierarchy (where a kubelet's root and kubepods sit). */
function cgroupDirs(): string[] {
  const out: string[] = [];
  for (const h of readdirSync('/sys/fs/cgroup')) {
    const base = join('/sys/fs/cgroup', h);
    let top: string[];
    try {
      top = readdirSync(base, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name);
    } catch {
      continue;
    }
    for (const d of top) {
      out.push(`${h}/${d}`);
      try {
        for (const e of readdirSync(join(base, d), { withFileTypes: true })) {
          if (e.isDirectory()) out.push(`${h}/${d}/${e.name}`);
        }
      } catch {
        /* gone meanwhile */
      }
    }
  }
  return out.sort();
}

export function hostSnapshot(): HostSnapshot {
  return {
    // Mount points only: options and ids change for reasons of their own.
    mounts: lines(
      readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[4] ?? '')
        .join('\n'),
    ),
    cgroups: cgroupDirs(),
    sysctls: WATCHED_SYSCTLS.map((n) => `${n}=${readSysctl(n)}`),
    netns: lines(run('ip', ['netns', 'list'])),
    links: lines(
      run('ip', ['-o', 'link', 'show'])
        .replace(/^\d+: /gm, '')
        .replace(/\\.*$/gm, ''),
    ),
    routes: lines(run('ip', ['route', 'show'])),
    // Rules and chains, without the packet counters.
    iptables: lines(run('iptables-save', []).replace(/\[\d+:\d+\]/g, '')).filter((l) => !l.startsWith('#')),
    paths: HOST_PATHS.filter((p) => existsSync(p)),
  };
}

/** Differences between two snapshots, as `+ kind: line` / `- kind: line`; empty when equal. */
export function diffSnapshots(before: HostSnapshot, after: HostSnapshot): string[] {
  const out: string[] = [];
  for (const key of Object.keys(before) as (keyof HostSnapshot)[]) {
    const a = new Set(before[key]);
    const b = new Set(after[key]);
    for (const l of b) if (!a.has(l)) out.push(`+ ${key}: ${l}`);
    for (const l of a) if (!b.has(l)) out.push(`- ${key}: ${l}`);
  }
  return out;
}
