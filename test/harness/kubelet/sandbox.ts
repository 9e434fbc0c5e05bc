import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { V1Container, V1EnvVar, V1Pod, V1Probe } from '@kubernetes/client-node';
import { isFree } from '../ports.js';
import {
  ContainerError,
  type ContainerState,
  configError,
  type EnvSources,
  expandVars,
  fieldValue,
  isRoot,
  type PodState,
} from './pod.js';
import type { ImageRuntime } from './runtimes.js';
import { chownTree, writeFileAtomic } from './volumes.js';

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

/** What the container environment needs from the rest of the kubelet. */
export interface EnvContext {
  nodeName: string;
  sources: EnvSources;
  hostPath: (p: PodState, c: V1Container, path: string) => string | undefined;
  mapArg: (p: PodState, c: V1Container, arg: string) => string;
  /** The pod's hosts file (see dns.ts). */
  hostsFile: (p: PodState) => string;
}

/**
 * A container's environment: its env and envFrom as the container sees them, and the
 * process's on the host (container paths mapped, nss_wrapper for its users, hosts and name,
 * the container marker), and argv[0] looked up as execve in the container would.
 */
export function podEnv(k: EnvContext) {
  /** The container's env as the container sees it (container paths). */
  const resolveEnv = async (p: PodState, c: V1Container): Promise<Record<string, string>> => {
    const env: Record<string, string> = {};
    for (const from of c.envFrom ?? []) {
      const prefix = from.prefix ?? '';
      const src = from.configMapRef
        ? await k.sources.configMap(p.namespace, from.configMapRef.name!)
        : from.secretRef
          ? await k.sources.secret(p.namespace, from.secretRef.name!)
          : {};
      if (src === undefined) {
        if (from.configMapRef?.optional || from.secretRef?.optional) continue;
        throw configError(`envFrom: ${from.configMapRef?.name ?? from.secretRef?.name} not found`);
      }
      for (const [k, v] of Object.entries(src)) env[prefix + k] = v;
    }
    for (const e of c.env ?? []) env[e.name] = await envValue(p, e, env);
    return env;
  };

  const envValue = async (p: PodState, e: V1EnvVar, env: Record<string, string>): Promise<string> => {
    if (e.value !== undefined) return expandVars(e.value, env);
    const vf = e.valueFrom;
    if (!vf) return '';
    if (vf.fieldRef) return fieldValue(p, vf.fieldRef.fieldPath, k.nodeName);
    const ref = vf.secretKeyRef ?? vf.configMapKeyRef;
    if (ref) {
      const data = vf.secretKeyRef
        ? await k.sources.secret(p.namespace, ref.name!)
        : await k.sources.configMap(p.namespace, ref.name!);
      const value = data?.[ref.key];
      if (value === undefined) {
        if (ref.optional) return '';
        throw configError(
          `${vf.secretKeyRef ? 'secret' : 'configmap'} "${ref.name}" key "${ref.key}" not found`,
        );
      }
      return value;
    }
    throw configError(`env ${e.name}: resourceFieldRef is not supported`);
  };

  const podHostname = (p: PodState) => p.pod.spec?.hostname || p.name;

  /**
   * The process's environment on the host: the image's PATH and what a container runtime
   * adds (HOSTNAME, HOME), the container's env with container paths mapped to host paths,
   * nss_wrapper (the image's passwd/group, the pod's hosts file) and the container marker.
   */
  const processEnv = (
    p: PodState,
    c: ContainerState,
    env: Record<string, string>,
    runtime: ImageRuntime,
    user: ContainerUser,
    marker: string,
  ): Record<string, string> => {
    const map = (v: string) => k.mapArg(p, c.spec, v);
    const out: Record<string, string> = { PATH: runtime.path, HOSTNAME: podHostname(p) };
    for (const [k, v] of Object.entries(env))
      out[k] = k === 'PATH' ? v.split(':').map(map).join(':') : map(v);
    if (out.HOME === undefined) {
      let home = k.hostPath(p, c.spec, user.home);
      if (!home) {
        // The image's home directory (not a volume): one per pod, the user's.
        home = join(p.dir, 'home', user.home);
        mkdirSync(home, { recursive: true });
        if (user.spawn) chownTree(home, user.spawn);
      }
      out.HOME = home;
    }
    let lib: string;
    try {
      lib = nssWrapperLib();
    } catch (e) {
      throw new ContainerError('CreateContainerError', (e as Error).message);
    }
    const etc = join(p.dir, 'etc', c.spec.name);
    writeFileAtomic(join(etc, 'passwd'), user.passwd, 0o644);
    writeFileAtomic(join(etc, 'group'), user.group, 0o644);
    out.LD_PRELOAD = out.LD_PRELOAD ? `${lib}:${out.LD_PRELOAD}` : lib;
    out.NSS_WRAPPER_PASSWD = join(etc, 'passwd');
    out.NSS_WRAPPER_GROUP = join(etc, 'group');
    out.NSS_WRAPPER_HOSTS = k.hostsFile(p);
    out.NSS_WRAPPER_HOSTNAME = podHostname(p);
    out[CONTAINER_MARKER] = marker;
    return out;
  };

  /** argv[0] as execve in the container would find it: a path, or a name looked up in PATH. */
  const resolveExecutable = (argv0: string, path: string): string => {
    const ok = (f: string) => {
      try {
        accessSync(f, constants.X_OK);
        return statSync(f).isFile();
      } catch {
        return false;
      }
    };
    if (argv0.includes('/')) {
      if (ok(argv0)) return argv0;
      throw new ContainerError('RunContainerError', `exec: "${argv0}": no such file or directory`);
    }
    for (const dir of path.split(':')) if (dir && ok(join(dir, argv0))) return join(dir, argv0);
    throw new ContainerError('RunContainerError', `exec: "${argv0}": executable file not found in $PATH`);
  };

  /** The whole environment of a spawned process: the container's, nothing of the test process's. */
  const cleanEnv = (env: Record<string, string>): NodeJS.ProcessEnv => ({
    ...Object.fromEntries(Object.keys(process.env).map((k) => [k, undefined])),
    ...env,
  });

  /** A readiness probe, run as in the container: exec (its env, user, mounts), tcpSocket, httpGet. */
  const runProbe = (p: PodState, c: ContainerState, probe: V1Probe): Promise<boolean> => {
    const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
    const ip = p.ip!;
    const portOf = (port: number | string) =>
      typeof port === 'number'
        ? port
        : /^\d+$/.test(port)
          ? Number(port)
          : (c.spec.ports?.find((x) => x.name === port)?.containerPort ?? 0);
    if (probe.exec?.command) {
      // Run in the container: its env, user and mount mapping.
      const argv = probe.exec.command.map((a) => k.mapArg(p, c.spec, a));
      let exe: string;
      try {
        exe = resolveExecutable(argv[0]!, c.env.PATH ?? '');
      } catch {
        return Promise.resolve(false);
      }
      return new Promise((resolve) => {
        const child = spawn(exe, argv.slice(1), {
          cwd: c.cwd,
          env: cleanEnv(c.env),
          stdio: 'ignore',
          timeout: timeoutMs,
          killSignal: 'SIGKILL',
          ...(c.user?.spawn ?? {}),
        });
        child.once('error', () => resolve(false));
        child.once('exit', (code) => resolve(code === 0));
      });
    }
    if (probe.tcpSocket) {
      const port = portOf(probe.tcpSocket.port as number | string);
      return new Promise((resolve) => {
        const s = connect({ host: probe.tcpSocket?.host ?? ip, port, timeout: timeoutMs });
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('timeout', () => {
          s.destroy();
          resolve(false);
        });
        s.once('error', () => resolve(false));
      });
    }
    if (probe.httpGet) {
      const port = portOf(probe.httpGet.port as number | string);
      const url = `${(probe.httpGet.scheme ?? 'HTTP').toLowerCase()}://${probe.httpGet.host ?? ip}:${port}${probe.httpGet.path ?? '/'}`;
      return fetch(url, { signal: AbortSignal.timeout(timeoutMs) }).then(
        (r) => r.status >= 200 && r.status < 400,
        () => false,
      );
    }
    return Promise.resolve(false);
  };

  return { resolveEnv, processEnv, resolveExecutable, cleanEnv, runProbe };
}

/**
 * A container stop: graceful is SIGTERM to the main process (as a runtime signals the
 * container's PID 1), SIGKILL after the grace; either way, then, everything it started.
 */
export async function stopContainer(c: ContainerState, graceful: boolean, graceMs = 10_000): Promise<void> {
  clearTimeout(c.probeTimer);
  clearTimeout(c.restartTimer);
  c.ready = false;
  const svc = c.svc;
  if (svc && !svc.exited()) {
    if (graceful && svc.child.pid !== undefined) {
      const exited = new Promise<void>((r) => svc.child.once('exit', () => r()));
      try {
        process.kill(svc.child.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      const t = setTimeout(() => void svc.kill(), graceMs);
      await exited;
      clearTimeout(t);
    }
    await svc.kill();
  }
  if (c.marker) await killContainer(c.marker);
}

/**
 * The pod network: one loopback address per pod.
 * 127.0.<n>.<m>: n from a hash of the pid and node name, so that concurrent test processes
 * rarely meet; an address whose ports are taken is skipped anyway. Addresses are never
 * reused within one kubelet: a new pod gets a new IP, as on a real node.
 */
export function ipAllocator(nodeName: string): (wanted: number[]) => Promise<string> {
  let ipSeq = 0;
  const ipBase = createHash('sha256').update(`${process.pid}/${nodeName}/${Date.now()}`).digest()[0]! % 200;
  const allocateIp = async (wanted: number[]): Promise<string> => {
    const ports = [...new Set(wanted)];
    for (let tries = 0; tries < 1000; tries++) {
      const i = ipSeq++;
      const n = 1 + ((ipBase + Math.floor(i / 250)) % 254);
      const ip = `127.0.${n}.${2 + (i % 250)}`;
      const free = await Promise.all(ports.map((p) => isFree(p, ip)));
      if (free.every(Boolean)) return ip;
    }
    throw new Error('no free loopback address for a pod');
  };

  return allocateIp;
}
