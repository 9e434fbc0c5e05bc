import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import type { V1Container, V1Pod } from '@kubernetes/client-node';

/**
 * What stands in for a container's isolation: its user (runAsUser/runAsGroup/fsGroup), its
 * /etc/passwd and /etc/group and its resolver (cluster DNS and the pod's /etc/hosts), the
 * last three through nss_wrapper (LD_PRELOAD), and the container's "cgroup": a marker in the
 * environment of every process it starts, to find them all when it is torn down.
 */

/** The marker variable (a real container has no such variable; nothing reads it). */
export const CONTAINER_MARKER = 'KUBELET_STANDIN_CONTAINER';

const LIB_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib'];
let nssLib: string | undefined;

/** libnss_wrapper.so (Debian package libnss-wrapper, installed by `make tools`). */
export function nssWrapperLib(): string {
  if (nssLib) return nssLib;
  const found = LIB_DIRS.map((d) => `${d}/libnss_wrapper.so`).find((p) => existsSync(p));
  if (!found)
    throw new Error('libnss_wrapper.so is not installed (Debian package libnss-wrapper); run `make tools`');
  nssLib = found;
  return found;
}

export const isRoot = () => process.getuid?.() === 0;

export interface ContainerUser {
  /** The uid/gid the container asks for (the image's default: root). */
  uid: number;
  gid: number;
  /** What the process is spawned with: undefined when the test process is not root (it runs as itself). */
  spawn: { uid: number; gid: number } | undefined;
  /** The container's /etc/passwd and /etc/group. */
  passwd: string;
  group: string;
  /** The home directory of the user in the image's passwd ('/' when it has none). */
  home: string;
}

export class RunAsRoot extends Error {}

const parse = (text: string) =>
  text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split(':'));

/**
 * The container's user as a container runtime would make it: runAsUser (container over pod)
 * or the image's default (root); runAsGroup, else the gid of that user in the image's
 * /etc/passwd, else 0. runAsNonRoot with uid 0 fails (CreateContainerConfigError). When the
 * test process cannot switch users, the passwd entry of the wanted uid is given its own uid
 * instead, so programs looking themselves up (initdb, postgres) find a user either way.
 */
export function containerUser(
  pod: V1Pod,
  c: V1Container,
  image: { passwd: string; group: string },
): ContainerUser {
  const psc = pod.spec?.securityContext;
  const csc = c.securityContext;
  const uid = csc?.runAsUser ?? psc?.runAsUser ?? 0;
  if ((csc?.runAsNonRoot ?? psc?.runAsNonRoot) && uid === 0)
    throw new RunAsRoot('container has runAsNonRoot and image will run as root');
  const pw = parse(image.passwd);
  const entry = pw.find((f) => Number(f[2]) === uid);
  const gid = csc?.runAsGroup ?? psc?.runAsGroup ?? (entry ? Number(entry[3]) : 0);
  let passwd = image.passwd;
  let group = image.group;
  let spawn: ContainerUser['spawn'];
  if (isRoot()) {
    spawn = { uid, gid };
  } else {
    const self = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    if (self.uid !== uid) {
      const name = entry?.[0] ?? userInfo().username;
      passwd = `${pw
        .filter((f) => Number(f[2]) !== self.uid && f[0] !== name)
        .map((f) => f.join(':'))
        .join(
          '\n',
        )}\n${name}:x:${self.uid}:${self.gid}:${entry?.[4] ?? ''}:${entry?.[5] ?? '/'}:${entry?.[6] ?? '/bin/sh'}\n`;
      const gr = parse(image.group);
      const gname = gr.find((f) => Number(f[2]) === gid)?.[0] ?? name;
      group = `${gr
        .filter((f) => Number(f[2]) !== self.gid && f[0] !== gname)
        .map((f) => f.join(':'))
        .join('\n')}\n${gname}:x:${self.gid}:\n`;
    }
  }
  return { uid, gid, spawn, passwd, group, home: entry?.[5] || '/' };
}

/** Owner of the pod's writable volumes: the pod's runAsUser (or its first container's) and fsGroup. */
export function volumeOwner(pod: V1Pod): { uid: number; gid: number } | undefined {
  if (!isRoot()) return undefined;
  const psc = pod.spec?.securityContext;
  const uid = psc?.runAsUser ?? pod.spec?.containers?.[0]?.securityContext?.runAsUser ?? 0;
  const gid = psc?.fsGroup ?? psc?.runAsGroup ?? pod.spec?.containers?.[0]?.securityContext?.runAsGroup ?? 0;
  if (uid === 0 && gid === 0) return undefined;
  return { uid, gid };
}

/** Pids of every process carrying the container's marker (its "cgroup"). */
export function containerPids(marker: string): number[] {
  const needle = Buffer.from(`\0${CONTAINER_MARKER}=${marker}\0`);
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const env = Buffer.concat([Buffer.from([0]), readFileSync(`/proc/${name}/environ`), Buffer.from([0])]);
      if (env.includes(needle)) out.push(Number(name));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return out;
}

/** SIGKILLs every process of the container until none is left (a container's teardown). */
export async function killContainer(marker: string): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const pids = containerPids(marker).filter((p) => p !== process.pid);
    if (pids.length === 0 || Date.now() > deadline) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
