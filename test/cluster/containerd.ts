import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type Service, start, waitUntil } from '../harness/process.js';
import { tool } from '../harness/tools.js';
import { NETWORK } from './addresses.js';
import { inNetns } from './netns.js';

const exec = promisify(execFile);

/** The sandbox image containerd gives every pod; built by scripts/tools.sh (test/cluster/pause). */
export const PAUSE_IMAGE = 'localhost/nox-pause:1';

export interface Containerd {
  readonly service: Service;
  /** The CRI and containerd API socket (unix path). */
  readonly socket: string;
  /** `ctr` against this containerd in the `k8s.io` namespace (the one the CRI uses). */
  ctr(args: string[]): Promise<string>;
  /** Imports an OCI or docker archive into the CRI's namespace; returns the image names it holds. */
  importImage(archive: string): Promise<string[]>;
}

/**
 * Debian's containerd 1.6 with its own root, state and socket under the node's directory,
 * runc (not crun: it refuses this kernel's hybrid cgroup layout) with cgroupfs, and the CNI
 * bridge. `restrict_oom_score_adj` is required when containerd runs with a negative
 * oom_score_adj or as a non-init process: without it runc fails every pod with "can't get
 * final child's PID from pipe".
 */
export async function startContainerd(dir: string): Promise<Containerd> {
  const root = join(dir, 'containerd');
  const socket = join(root, 'containerd.sock');
  const cniConfDir = join(dir, 'cni', 'net.d');
  mkdirSync(cniConfDir, { recursive: true });
  mkdirSync(join(root, 'root'), { recursive: true });
  writeFileSync(
    join(cniConfDir, '10-nox-bridge.conflist'),
    `${JSON.stringify(cniConfig(join(dir, 'cni', 'ipam')), null, 2)}\n`,
  );
  const config = join(root, 'config.toml');
  writeFileSync(
    config,
    [
      'version = 2',
      `root = "${join(root, 'root')}"`,
      `state = "${join(root, 'state')}"`,
      // Snapshotters this machine cannot or need not use; aufs and devmapper would probe the kernel.
      'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
      '[grpc]',
      `  address = "${socket}"`,
      '[ttrpc]',
      `  address = "${socket}.ttrpc"`,
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = "${join(root, 'opt')}"`,
      '[plugins."io.containerd.grpc.v1.cri"]',
      `  sandbox_image = "${PAUSE_IMAGE}"`,
      '  restrict_oom_score_adj = true',
      '  disable_apparmor = true',
      '  enable_selinux = false',
      '  max_container_log_line_size = 16384',
      // Pods' network namespaces under the node's directory, not in the host's /run/netns.
      '  netns_mounts_under_state_dir = true',
      '  [plugins."io.containerd.grpc.v1.cri".containerd]',
      '    snapshotter = "overlayfs"',
      '    default_runtime_name = "runc"',
      '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
      '      runtime_type = "io.containerd.runc.v2"',
      '      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
      '        SystemdCgroup = false',
      `        BinaryName = "${tool('runc')}"`,
      `        Root = "${join(dir, 'runc')}"`,
      '  [plugins."io.containerd.grpc.v1.cri".cni]',
      '    bin_dir = "/usr/lib/cni"',
      `    conf_dir = "${cniConfDir}"`,
      '',
    ].join('\n'),
  );
  const [cmd, args] = inNetns(tool('containerd'), ['--config', config]);
  const service = start('node-containerd', cmd, args, {
    logFile: join(dir, 'containerd.log'),
    // The shims containerd starts find runc and themselves on PATH.
    env: { PATH: `${join(tool('containerd'), '..')}:${process.env.PATH}` },
  });
  const ctr = async (a: string[]): Promise<string> =>
    (
      await exec(tool('ctr'), ['--address', socket, '--namespace', 'k8s.io', ...a], {
        maxBuffer: 64 * 1024 * 1024,
      })
    ).stdout;
  await waitUntil(
    'containerd answers',
    async () => (await ctr(['version'])).includes('Server'),
    30_000,
    service,
  );
  return {
    service,
    socket,
    ctr,
    async importImage(archive) {
      const out = await ctr(['images', 'import', '--snapshotter', 'overlayfs', archive]);
      // "unpacking <name> (sha256:...)...done" per image
      return [...out.matchAll(/unpacking (\S+) \(/g)].map((m) => m[1] as string);
    },
  };
}

/** bridge + host-local + loopback (Debian's containernetworking-plugins), pods on NETWORK.podCidr. */
function cniConfig(ipamDir: string): unknown {
  return {
    cniVersion: '0.4.0',
    name: 'nox-node',
    plugins: [
      {
        type: 'bridge',
        bridge: 'cni0',
        isGateway: true,
        ipMasq: false,
        // A pod reaching itself through its Service's ClusterIP comes back on its own port.
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          // Not /var/lib/cni/networks: allocations die with the node's directory.
          dataDir: ipamDir,
          ranges: [[{ subnet: NETWORK.podCidr, gateway: NETWORK.podGateway }]],
          routes: [{ dst: '0.0.0.0/0' }],
        },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
}
