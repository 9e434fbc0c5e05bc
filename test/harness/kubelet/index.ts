import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  accessSync,
  chmodSync,
  constants,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { KubeConfig, V1Container, V1EnvVar, V1Pod, V1Probe, V1Volume } from '@kubernetes/client-node';
import { ApiException, CoreV1Api } from '@kubernetes/client-node';
import { pods as podsType } from '../../../common/kube/resources.js';
import type { Kube } from '../kube.js';
import { kubeRequest } from '../kubeHttp.js';
import { isFree } from '../ports.js';
import { type Service, sharedScratchDir, start } from '../process.js';
import { runDir } from '../tools.js';
import { type ClusterDns, startClusterDns } from './dns.js';
import { type ImageRuntime, runtimeFor, UnsupportedImage } from './runtimes.js';
import {
  CONTAINER_MARKER,
  type ContainerUser,
  containerUser,
  killContainer,
  nssWrapperLib,
  RunAsRoot,
  volumeOwner,
} from './sandbox.js';
import { chownTree, type FileSpec, formatMap, syncDir, writeFileAtomic } from './volumes.js';
import { watchAll } from './watch.js';

/**
 * A stand-in for the kubelet, and only for that: nothing here runs containers, so for each
 * pod bound to its Node it starts the real process the container's image would run
 * (redis-server for `redis:*`, the container's command with the host's PostgreSQL binaries
 * for `postgres:<major>`) on a loopback address of the pod's own (127.0.n.m), and reports the
 * pod's IP, phase, container states and readiness to the API server the way a kubelet does.
 * Code under test (the operator) sees ordinary Pods and cannot tell.
 *
 * What it emulates:
 * - registration: a Node object (Ready, InternalIP 127.0.0.1) with `nodeName`;
 * - scheduling, since the harness has no scheduler: unscheduled pods labelled
 *   `app.kubernetes.io/part-of=nox` whose nodeSelector matches are bound to this node
 *   (binding subresource);
 * - the pod sandbox: one loopback IP per pod (kept across container restarts, a new one for
 *   a new pod), a directory per pod holding its volumes: ConfigMap and Secret volumes written
 *   as files, projected volumes (the service-account token through the TokenRequest API,
 *   the CA bundle, downward API items), downward API volumes (refreshed when the pod's labels
 *   or annotations change, in the kubelet's `key="value"` format, each file replaced
 *   atomically), emptyDir, and persistentVolumeClaim volumes as a directory per claim that
 *   outlives the pod (as a bound PV would);
 * - the container: env (value with `$(VAR)` expansion, fieldRef, secretKeyRef,
 *   configMapKeyRef, envFrom, HOSTNAME, HOME), command/args with `$(VAR)` expansion, argv[0]
 *   looked up in the image's PATH, and the mount namespace: a container path under a volume
 *   mount is mapped to the volume's directory on the host (args, workingDir, env values, PATH
 *   entries, probe commands), through a short per-pod directory under /tmp so that Unix
 *   socket paths stay short; and the network namespace: a process that would listen on
 *   0.0.0.0 inside its pod listens on the pod IP here (redis: `--bind <podIP>
 *   --bind-source-addr <podIP>`; postgres: as its own configuration says);
 * - the user: runAsUser/runAsGroup (container over pod) and runAsNonRoot; when the test runs
 *   as root the process (and its exec probes) run as that uid/gid, and the pod's writable
 *   volumes are owned by runAsUser:fsGroup; the image's /etc/passwd and /etc/group, the
 *   pod's /etc/hosts and cluster DNS (see dns.ts) through nss_wrapper (LD_PRELOAD);
 * - the container's lifetime: the process tree it started (found by a marker in the
 *   environment) is killed when its main process exits, as a container's teardown would;
 *   graceful stop sends SIGTERM to the main process only, SIGKILL to all after the grace;
 * - restartPolicy Always: an exited container is restarted (same IP, same volumes) after
 *   `restartDelayMs`, with restartCount and lastState reported;
 * - readiness probes (exec, tcpSocket, httpGet) with initialDelay/period/timeout/thresholds;
 *   a container that is not running is not ready at once;
 * - graceful deletion: a pod with a deletionTimestamp has its processes stopped (SIGTERM,
 *   then SIGKILL after the grace period), its volumes removed (not the PVC directories), and
 *   is then deleted for good, as the kubelet confirms a deletion.
 *
 * Not emulated: init containers, liveness/startup probes, resource limits, image pulls,
 * supplementary groups (fsGroup is the volumes' group, not the process's), service links
 * env vars, ports other than through the pod IP. Images without a runtime here stay Waiting
 * with reason `ImageNotSupportedByStandIn`.
 */
export interface KubeletOptions {
  nodeName: string;
  /** Labels of the Node (a pod's nodeSelector must match them to be bound here). */
  labels?: Record<string, string>;
  /** Bind unscheduled Nox pods to this node (default true). */
  schedule?: boolean;
  /** Delay before an exited container is started again (a real kubelet backs off from 10 s). Default 1000. */
  restartDelayMs?: number;
  /** How often ConfigMap and Secret volumes are brought up to date (a real kubelet: about a minute). Default 1000. */
  volumeSyncMs?: number;
}

export interface KubeletPod {
  namespace: string;
  name: string;
  uid: string;
  ip: string | undefined;
  running: boolean;
  ready: boolean;
  restarts: number;
  held: boolean;
}

export interface Kubelet {
  readonly nodeName: string;
  /** The pods this kubelet runs (not yet deleted). */
  pods(): KubeletPod[];
  /** The log file of a pod's (first) container; `pod` is `name` or `namespace/name`. */
  logFile(pod: string): string | undefined;
  /**
   * Where a container path of a pod's (first, or named) container is on the host, when it is
   * under one of its volume mounts: e.g. to read a downward API file as the container sees it.
   */
  hostPath(pod: string, containerPath: string, container?: string): string | undefined;
  /** SIGKILL (or SIGTERM with `graceful`) the pod's processes: a crash; restarted after restartDelayMs. */
  kill(pod: string, opts?: { graceful?: boolean }): Promise<void>;
  /** Like kill(), but the containers stay down (pod not ready) until resume(). */
  stop(pod: string, opts?: { graceful?: boolean }): Promise<void>;
  /** Lifts stop(): starts the pod's containers again at once. */
  resume(pod: string): Promise<void>;
  /** Stops watching and stops every process (gracefully); leaves the API objects alone. */
  stopAll(): Promise<void>;
}

const PART_OF = 'app.kubernetes.io/part-of=nox';
const HOST_IP = '127.0.0.1';

interface EnvSources {
  configMap(namespace: string, name: string): Promise<Record<string, string> | undefined>;
  secret(namespace: string, name: string): Promise<Record<string, string> | undefined>;
}

/** Kubernetes' `$(VAR)` expansion: `$$` escapes, unknown references stay as written. */
export function expandVars(s: string, env: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) => {
    if (m === '$$') return '$';
    return name !== undefined && name in env ? env[name]! : m;
  });
}

/** A container that cannot start (yet): reported as Waiting with `reason`, retried. */
class ContainerError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}
const configError = (message: string) => new ContainerError('CreateContainerConfigError', message);

interface ContainerState {
  readonly spec: V1Container;
  svc: Service | undefined;
  /** Incremented per start; probes and exit handlers of an older start are ignored. */
  gen: number;
  /** The marker of the current start's processes (see sandbox.ts). */
  marker: string | undefined;
  held: boolean;
  restarts: number;
  ready: boolean;
  startedAt: string | undefined;
  waiting: { reason: string; message: string } | undefined;
  lastTerminated: { exitCode: number; reason: string; startedAt?: string; finishedAt: string } | undefined;
  /** The environment of the running process (host paths), for exec probes. */
  env: Record<string, string>;
  user: ContainerUser | undefined;
  cwd: string;
  probeTimer: NodeJS.Timeout | undefined;
  restartTimer: NodeJS.Timeout | undefined;
  logFile: string;
}

interface PodState {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  pod: V1Pod;
  ip: string | undefined;
  dir: string;
  /** /tmp/noxk-XXXX/<n>: a symlink per volume, the host paths containers see (short, for Unix sockets). */
  short: string;
  /** When this kubelet first saw the pod (the kubernetes.io/config.seen annotation). */
  seen: string;
  containers: ContainerState[];
  startTime: string;
  terminating: boolean;
  gone: boolean;
  /** PVC directories already given to the pod's owner. */
  owned: Set<string>;
  conditionTimes: Map<string, { status: string; time: string }>;
  lastStatusJson: string;
  /** Serializes start/stop/status work on this pod. */
  chain: Promise<void>;
}

export async function startKubelet(kube: Kube, opts: KubeletOptions): Promise<Kubelet> {
  const kc = kube.kubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const nodeName = opts.nodeName;
  const labels = {
    'kubernetes.io/hostname': nodeName,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': 'amd64',
    ...(opts.labels ?? {}),
  };
  const restartDelayMs = opts.restartDelayMs ?? 1000;
  // Pod directories hold what containers running as other users read (scripts, config,
  // PVC data): outside the checkout, which those users may not be able to enter.
  const root = sharedScratchDir(`kubelet-${nodeName}`);
  const shortRoot = mkdtempSync('/tmp/noxk-');
  chmodSync(shortRoot, 0o755);
  const logDir = join(runDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const pods = new Map<string, PodState>(); // by uid
  const aborts: AbortController[] = [];
  let stopped = false;
  let podSeq = 0;
  const label = `kubelet ${nodeName}`;

  await registerNode(kc, nodeName, labels);

  // -------------------------------------------------------------------- IP allocation
  // 127.0.<n>.<m>: n from a hash of the pid and node name, so that concurrent test processes
  // rarely meet; an address whose ports are taken is skipped anyway. Addresses are never
  // reused within one kubelet: a new pod gets a new IP, as on a real node.
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

  // -------------------------------------------------------------------- API helpers
  const api = async (method: string, path: string, body?: unknown, contentType?: string) => {
    const res = await kubeRequest(kc, method, path, {
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      ...(contentType ? { contentType } : {}),
    });
    return res;
  };
  const sources: EnvSources = {
    async configMap(ns, name) {
      const r = await api('GET', `/api/v1/namespaces/${ns}/configmaps/${name}`);
      if (r.status === 404) return undefined;
      if (r.status !== 200) throw new Error(`GET configmap ${ns}/${name}: ${r.status}`);
      return (r.body as { data?: Record<string, string> }).data ?? {};
    },
    async secret(ns, name) {
      const r = await api('GET', `/api/v1/namespaces/${ns}/secrets/${name}`);
      if (r.status === 404) return undefined;
      if (r.status !== 200) throw new Error(`GET secret ${ns}/${name}: ${r.status}`);
      const data = (r.body as { data?: Record<string, string> }).data ?? {};
      return Object.fromEntries(
        Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]),
      );
    },
  };

  const enqueue = (p: PodState, fn: () => Promise<void>) => {
    p.chain = p.chain.then(fn).catch((e: unknown) => {
      if (!stopped) console.error(`${label}: pod ${p.namespace}/${p.name}:`, e);
    });
    return p.chain;
  };

  // -------------------------------------------------------------------- cluster DNS
  // Every pod's hosts file follows Services (and, for headless ones, Pods) within a few ms.
  let hostsTimer: NodeJS.Timeout | undefined;
  const hostsFile = (p: PodState) => join(p.dir, 'etc', 'hosts');
  const writeHosts = (p: PodState) => {
    if (p.ip === undefined || p.terminating || p.gone || stopped) return;
    writeFileAtomic(hostsFile(p), dns.hostsFile(p.pod, p.ip), 0o644);
  };
  const dnsAbort = new AbortController();
  aborts.push(dnsAbort);
  const dns: ClusterDns = startClusterDns(
    kc,
    dnsAbort.signal,
    () => {
      if (hostsTimer || stopped) return;
      hostsTimer = setTimeout(() => {
        hostsTimer = undefined;
        for (const p of pods.values()) writeHosts(p);
      }, 10);
    },
    label,
  );
  await dns.synced;

  // -------------------------------------------------------------------- volumes
  const volumeDir = (p: PodState, v: V1Volume): string => {
    if (v.persistentVolumeClaim) return join(root, 'pvc', p.namespace, v.persistentVolumeClaim.claimName);
    return join(p.dir, 'volumes', v.name);
  };

  /** The kubelet's own annotations on its copy of the pod, which the downward API shows too. */
  const annotations = (p: PodState): Record<string, string> => ({
    ...(p.pod.metadata?.annotations ?? {}),
    'kubernetes.io/config.seen': p.seen,
    'kubernetes.io/config.source': 'api',
  });

  type DownwardItem = { path: string; fieldRef?: { fieldPath: string }; mode?: number };
  const downwardFiles = (p: PodState, items: DownwardItem[], mode: number | undefined) => {
    const files = new Map<string, FileSpec>();
    for (const item of items)
      if (item.fieldRef)
        files.set(item.path, {
          data: fieldValue(p, item.fieldRef.fieldPath),
          mode: item.mode ?? mode ?? 0o644,
        });
    return files;
  };

  const keyFiles = (
    data: Record<string, string>,
    items: { key: string; path: string; mode?: number }[] | undefined,
    defaultMode: number | undefined,
    what: string,
  ) => {
    const files = new Map<string, FileSpec>();
    const entries: { key: string; path: string; mode?: number }[] =
      items ?? Object.keys(data).map((key) => ({ key, path: key }));
    for (const item of entries) {
      const value = data[item.key];
      if (value === undefined) throw configError(`key ${item.key} not found in ${what}`);
      files.set(item.path, { data: value, mode: item.mode ?? defaultMode ?? 0o644 });
    }
    return files;
  };

  /** Materialises the pod's volumes; throws a config error while a referenced object is missing. */
  const setupVolumes = async (p: PodState) => {
    const owner = volumeOwner(p.pod);
    for (const v of p.pod.spec?.volumes ?? []) {
      const dir = volumeDir(p, v);
      if (v.configMap) {
        const data = await sources.configMap(p.namespace, v.configMap.name!);
        if (data === undefined) {
          if (v.configMap.optional) continue;
          throw configError(`configmap "${v.configMap.name}" not found`);
        }
        syncDir(dir, keyFiles(data, v.configMap.items, v.configMap.defaultMode, v.configMap.name!), owner);
      } else if (v.secret) {
        const data = await sources.secret(p.namespace, v.secret.secretName!);
        if (data === undefined) {
          if (v.secret.optional) continue;
          throw configError(`secret "${v.secret.secretName}" not found`);
        }
        syncDir(dir, keyFiles(data, v.secret.items, v.secret.defaultMode, v.secret.secretName!), owner);
      } else if (v.downwardAPI) {
        syncDir(dir, downwardFiles(p, v.downwardAPI.items ?? [], v.downwardAPI.defaultMode), owner);
      } else if (v.projected) {
        // The service-account volume (kube-api-access-*) and friends: files from several sources.
        const files = new Map<string, FileSpec>();
        const mode = v.projected.defaultMode;
        for (const src of v.projected.sources ?? []) {
          if (src.serviceAccountToken) {
            const sa = p.pod.spec?.serviceAccountName ?? 'default';
            const res = await api('POST', `/api/v1/namespaces/${p.namespace}/serviceaccounts/${sa}/token`, {
              apiVersion: 'authentication.k8s.io/v1',
              kind: 'TokenRequest',
              spec: {
                audiences: src.serviceAccountToken.audience ? [src.serviceAccountToken.audience] : [],
                expirationSeconds: src.serviceAccountToken.expirationSeconds ?? 3607,
                boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: p.name, uid: p.uid },
              },
            });
            if (res.status !== 201 && res.status !== 200)
              throw configError(`token for serviceaccount ${sa}: HTTP ${res.status}`);
            files.set(src.serviceAccountToken.path, {
              data: (res.body as { status: { token: string } }).status.token,
              mode: 0o600,
            });
          } else if (src.configMap || src.secret) {
            const ref = (src.configMap ?? src.secret)!;
            const data = src.configMap
              ? await sources.configMap(p.namespace, ref.name!)
              : await sources.secret(p.namespace, ref.name!);
            if (data === undefined) {
              if (ref.optional) continue;
              throw configError(`${src.configMap ? 'configmap' : 'secret'} "${ref.name}" not found`);
            }
            for (const [k, f] of keyFiles(data, ref.items, mode, ref.name!)) files.set(k, f);
          } else if (src.downwardAPI) {
            for (const [k, f] of downwardFiles(p, src.downwardAPI.items ?? [], mode)) files.set(k, f);
          }
        }
        syncDir(dir, files, owner);
      } else if (v.emptyDir) {
        if (!existsSync(dir)) {
          // What the kubelet makes: world-writable (and, with fsGroup, that group's).
          mkdirSync(dir, { recursive: true });
          chmodSync(dir, 0o777);
          if (owner) chownTree(dir, owner);
        }
      } else if (v.persistentVolumeClaim) {
        if (!existsSync(dir)) {
          mkdirSync(dir, { recursive: true });
          chmodSync(dir, 0o777);
        }
        // fsGroup's recursive ownership change when the volume is mounted for a pod.
        if (owner && !p.owned.has(dir)) chownTree(dir, owner);
        p.owned.add(dir);
      } else {
        throw configError(
          `volume ${v.name}: only configMap, secret, projected, downwardAPI, emptyDir and PVC volumes are emulated`,
        );
      }
      const link = join(p.short, v.name);
      if (!lstatExists(link)) symlinkSync(dir, link);
    }
  };

  /** The kubelet refreshes downward API files when the pod's metadata changes. */
  const refreshDownward = (p: PodState) => {
    if (p.terminating || p.gone || stopped) return;
    const owner = volumeOwner(p.pod);
    for (const v of p.pod.spec?.volumes ?? []) {
      const dir = volumeDir(p, v);
      if (!existsSync(dir)) continue; // not set up yet: setupVolumes writes the current values
      const files = v.downwardAPI
        ? downwardFiles(p, v.downwardAPI.items ?? [], v.downwardAPI.defaultMode)
        : new Map(
            (v.projected?.sources ?? []).flatMap((s) =>
              s.downwardAPI ? [...downwardFiles(p, s.downwardAPI.items ?? [], v.projected?.defaultMode)] : [],
            ),
          );
      for (const [path, f] of files) writeFileAtomic(join(dir, path), f.data, f.mode, owner);
    }
  };

  /**
   * The kubelet's periodic volume sync: ConfigMap and Secret volumes follow their objects
   * (a real kubelet takes up to a minute; here every `volumeSyncMs`). Files change by rename,
   * as the kubelet's atomic writer does; a missing object leaves the files as they are.
   */
  const refreshConfigVolumes = async (p: PodState) => {
    if (p.terminating || p.gone || stopped) return;
    const owner = volumeOwner(p.pod);
    for (const v of p.pod.spec?.volumes ?? []) {
      const dir = volumeDir(p, v);
      if (!existsSync(dir)) continue;
      if (v.configMap) {
        const data = await sources.configMap(p.namespace, v.configMap.name!);
        if (data)
          syncDir(dir, keyFiles(data, v.configMap.items, v.configMap.defaultMode, v.configMap.name!), owner);
      } else if (v.secret) {
        const data = await sources.secret(p.namespace, v.secret.secretName!);
        if (data)
          syncDir(dir, keyFiles(data, v.secret.items, v.secret.defaultMode, v.secret.secretName!), owner);
      }
    }
  };
  const volumeSyncTimer = setInterval(() => {
    for (const p of pods.values()) void enqueue(p, () => refreshConfigVolumes(p).catch(() => {}));
  }, opts.volumeSyncMs ?? 1000);
  volumeSyncTimer.unref();

  /** Container path → host path, through the container's volume mounts (longest prefix wins). */
  const hostPath = (p: PodState, c: V1Container, path: string): string | undefined => {
    let best: { mount: string; dir: string } | undefined;
    for (const m of c.volumeMounts ?? []) {
      const mount = m.mountPath.replace(/\/+$/, '') || '/';
      if (path !== mount && !path.startsWith(`${mount}/`)) continue;
      if (best && best.mount.length >= mount.length) continue;
      if (!p.pod.spec?.volumes?.some((v) => v.name === m.name)) continue;
      best = { mount, dir: join(p.short, m.name, m.subPath ?? '') };
    }
    return best ? join(best.dir, path.slice(best.mount.length)) : undefined;
  };
  const mapArg = (p: PodState, c: V1Container, arg: string) =>
    arg.startsWith('/') ? (hostPath(p, c, arg) ?? arg) : arg;

  // -------------------------------------------------------------------- env
  const fieldValue = (p: PodState, fieldPath: string): string => {
    const m = p.pod.metadata!;
    const label = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
    if (label) return (label[1] === 'labels' ? m.labels : annotations(p))?.[label[2]!] ?? '';
    switch (fieldPath) {
      case 'metadata.name':
        return m.name ?? '';
      case 'metadata.namespace':
        return m.namespace ?? '';
      case 'metadata.uid':
        return m.uid ?? '';
      case 'metadata.labels':
        return formatMap(m.labels);
      case 'metadata.annotations':
        return formatMap(annotations(p));
      case 'spec.nodeName':
        return nodeName;
      case 'spec.serviceAccountName':
        return p.pod.spec?.serviceAccountName ?? '';
      case 'status.podIP':
        return p.ip ?? '';
      case 'status.podIPs':
        return p.ip ?? '';
      case 'status.hostIP':
      case 'status.hostIPs':
        return HOST_IP;
      default:
        throw configError(`fieldRef ${fieldPath} is not supported`);
    }
  };

  /** The container's env as the container sees it (container paths). */
  const resolveEnv = async (p: PodState, c: V1Container): Promise<Record<string, string>> => {
    const env: Record<string, string> = {};
    for (const from of c.envFrom ?? []) {
      const prefix = from.prefix ?? '';
      const src = from.configMapRef
        ? await sources.configMap(p.namespace, from.configMapRef.name!)
        : from.secretRef
          ? await sources.secret(p.namespace, from.secretRef.name!)
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
    if (vf.fieldRef) return fieldValue(p, vf.fieldRef.fieldPath);
    const ref = vf.secretKeyRef ?? vf.configMapKeyRef;
    if (ref) {
      const data = vf.secretKeyRef
        ? await sources.secret(p.namespace, ref.name!)
        : await sources.configMap(p.namespace, ref.name!);
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
    const map = (v: string) => mapArg(p, c.spec, v);
    const out: Record<string, string> = { PATH: runtime.path, HOSTNAME: podHostname(p) };
    for (const [k, v] of Object.entries(env))
      out[k] = k === 'PATH' ? v.split(':').map(map).join(':') : map(v);
    if (out.HOME === undefined) {
      let home = hostPath(p, c.spec, user.home);
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
    out.NSS_WRAPPER_HOSTS = hostsFile(p);
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

  // -------------------------------------------------------------------- status
  const writeStatus = async (p: PodState) => {
    if (p.gone || stopped) return;
    const now = new Date().toISOString();
    const allStarted = p.containers.every((c) => c.startedAt !== undefined || c.restarts > 0);
    const allReady = p.containers.length > 0 && p.containers.every((c) => c.ready);
    const cond = (type: string, ok: boolean, reason?: string) => {
      const status = ok ? 'True' : 'False';
      const prev = p.conditionTimes.get(type);
      const time = prev && prev.status === status ? prev.time : now;
      p.conditionTimes.set(type, { status, time });
      return {
        type,
        status,
        lastProbeTime: null,
        lastTransitionTime: time,
        ...(!ok && reason ? { reason } : {}),
      };
    };
    const status = {
      phase: allStarted ? 'Running' : 'Pending',
      hostIP: HOST_IP,
      hostIPs: [{ ip: HOST_IP }],
      ...(p.ip ? { podIP: p.ip, podIPs: [{ ip: p.ip }] } : {}),
      startTime: p.startTime,
      conditions: [
        cond('PodReadyToStartContainers', p.ip !== undefined),
        cond('Initialized', true),
        cond('ContainersReady', allReady, 'ContainersNotReady'),
        cond('Ready', allReady, 'ContainersNotReady'),
        cond('PodScheduled', true),
      ],
      containerStatuses: p.containers.map((c) => ({
        name: c.spec.name,
        image: c.spec.image ?? '',
        imageID: '',
        ...(c.svc?.child.pid !== undefined ? { containerID: `standin://${c.svc.child.pid}` } : {}),
        ready: c.ready,
        started: c.svc !== undefined && !c.svc.exited(),
        restartCount: c.restarts,
        state:
          c.svc && !c.svc.exited() && c.startedAt
            ? { running: { startedAt: c.startedAt } }
            : { waiting: c.waiting ?? { reason: 'ContainerCreating', message: '' } },
        lastState: c.lastTerminated ? { terminated: c.lastTerminated } : {},
      })),
    };
    const json = JSON.stringify(status);
    if (json === p.lastStatusJson) return;
    const res = await api(
      'PATCH',
      `/api/v1/namespaces/${p.namespace}/pods/${p.name}/status`,
      { status },
      'application/merge-patch+json',
    );
    if (res.status === 200) p.lastStatusJson = json;
    else if (res.status === 404) p.gone = true;
    else throw new Error(`pod status ${p.namespace}/${p.name}: ${res.status} ${JSON.stringify(res.body)}`);
  };

  // -------------------------------------------------------------------- containers
  const containerPorts = (c: V1Container) => (c.ports ?? []).map((p) => p.containerPort);

  const startContainer = async (p: PodState, c: ContainerState): Promise<void> => {
    if (p.terminating || p.gone || c.held || stopped) return;
    if (c.svc && !c.svc.exited()) return;
    const gen = c.gen + 1;
    const marker = `${p.uid}/${c.spec.name}/${gen}`;
    let argv: string[];
    let env: Record<string, string>;
    let user: ContainerUser;
    try {
      const runtime = runtimeFor(c.spec.image ?? '');
      try {
        user = containerUser(p.pod, c.spec, runtime);
      } catch (e) {
        if (e instanceof RunAsRoot) throw configError(e.message);
        throw e;
      }
      await setupVolumes(p);
      const containerEnv = await resolveEnv(p, c.spec);
      const expand = (list: string[] | undefined) =>
        list?.map((s) => mapArg(p, c.spec, expandVars(s, containerEnv)));
      argv = [...runtime.argv(expand(c.spec.command), expand(c.spec.args)), ...runtime.networkArgs(p.ip!)];
      env = processEnv(p, c, containerEnv, runtime, user, marker);
      argv[0] = resolveExecutable(argv[0]!, env.PATH!);
    } catch (e) {
      if (e instanceof UnsupportedImage) {
        c.waiting = { reason: 'ImageNotSupportedByStandIn', message: e.message };
        await writeStatus(p);
        return; // no retry: the image will not become supported
      }
      if (!(e instanceof ContainerError)) throw e;
      c.waiting = { reason: e.reason, message: e.message };
      await writeStatus(p);
      const delay = e.reason === 'CreateContainerConfigError' ? 1000 : restartDelayMs;
      c.restartTimer = setTimeout(() => void enqueue(p, () => startContainer(p, c)), delay);
      return;
    }
    const cwd = c.spec.workingDir ? (hostPath(p, c.spec, c.spec.workingDir) ?? p.dir) : p.dir;
    mkdirSync(cwd, { recursive: true });
    c.gen = gen;
    const svc = start(`pod-${p.namespace}-${p.name}-${c.spec.name}`, argv[0]!, argv.slice(1), {
      cwd,
      env: cleanEnv(env),
      logFile: c.logFile,
      ...(user.spawn ?? {}),
    });
    c.svc = svc;
    c.marker = marker;
    c.env = env;
    c.user = user;
    c.cwd = cwd;
    c.startedAt = new Date().toISOString();
    c.waiting = undefined;
    c.ready = false;
    svc.child.once('exit', (code, signal) => {
      if (gen !== c.gen) return;
      c.ready = false;
      clearTimeout(c.probeTimer);
      c.lastTerminated = {
        exitCode: code ?? (signal === 'SIGKILL' ? 137 : 143),
        reason: code === 0 ? 'Completed' : 'Error',
        ...(c.startedAt ? { startedAt: c.startedAt } : {}),
        finishedAt: new Date().toISOString(),
      };
      c.startedAt = undefined;
      // The container is gone with its main process: so is everything it started.
      const teardown = killContainer(marker);
      if (p.terminating || stopped) return;
      c.restarts++;
      c.waiting = c.held
        ? { reason: 'CrashLoopBackOff', message: 'held down by the test (kubelet stand-in stop())' }
        : {
            reason: 'CrashLoopBackOff',
            message: `back-off ${restartDelayMs} ms restarting failed container`,
          };
      void enqueue(p, () => writeStatus(p));
      if (!c.held) {
        void teardown.then(() => {
          if (gen !== c.gen || c.held || p.terminating || stopped) return;
          c.restartTimer = setTimeout(() => void enqueue(p, () => startContainer(p, c)), restartDelayMs);
        });
      }
    });
    scheduleProbe(p, c, gen, c.spec.readinessProbe, true);
    await writeStatus(p);
  };

  /** Readiness probing of one container start (gen); stops when the container exits. */
  const scheduleProbe = (
    p: PodState,
    c: ContainerState,
    gen: number,
    probe: V1Probe | undefined,
    first: boolean,
  ) => {
    if (!probe) {
      // No probe: ready once running.
      c.ready = true;
      return;
    }
    let successes = 0;
    let failures = 0;
    const period = (probe.periodSeconds ?? 10) * 1000;
    const run = async () => {
      if (gen !== c.gen || p.terminating || stopped || !c.svc || c.svc.exited()) return;
      const ok = await runProbe(p, c, probe).catch(() => false);
      if (gen !== c.gen || p.terminating || stopped) return;
      if (ok) {
        failures = 0;
        successes++;
        if (!c.ready && successes >= (probe.successThreshold ?? 1)) {
          c.ready = true;
          await enqueue(p, () => writeStatus(p));
        }
      } else {
        successes = 0;
        failures++;
        if (c.ready && failures >= (probe.failureThreshold ?? 3)) {
          c.ready = false;
          await enqueue(p, () => writeStatus(p));
        }
      }
      if (gen === c.gen) c.probeTimer = setTimeout(() => void run(), period);
    };
    c.probeTimer = setTimeout(() => void run(), first ? (probe.initialDelaySeconds ?? 0) * 1000 : period);
  };

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
      const argv = probe.exec.command.map((a) => mapArg(p, c.spec, a));
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

  /**
   * A container stop: graceful is SIGTERM to the main process (as a runtime signals the
   * container's PID 1), SIGKILL after the grace; either way, then, everything it started.
   */
  const stopContainer = async (c: ContainerState, graceful: boolean, graceMs = 10_000) => {
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
  };

  // -------------------------------------------------------------------- pod lifecycle
  const setupPod = async (p: PodState) => {
    if (p.terminating || p.gone || stopped) return;
    if (p.ip === undefined) {
      const ports = (p.pod.spec?.containers ?? []).flatMap((c) => {
        const declared = containerPorts(c);
        let extra: number[] = [];
        try {
          extra = runtimeFor(c.image ?? '').extraPorts(declared);
        } catch {
          /* reported when the container starts */
        }
        return [...declared, ...extra];
      });
      p.ip = await allocateIp(ports);
    }
    writeHosts(p);
    if ((p.pod.spec?.initContainers ?? []).length > 0) {
      for (const c of p.containers)
        c.waiting = {
          reason: 'InitContainersNotSupported',
          message: 'the kubelet stand-in runs no init containers',
        };
      await writeStatus(p);
      return;
    }
    for (const c of p.containers) await startContainer(p, c);
    await writeStatus(p);
  };

  /**
   * What a kubelet does once a pod's containers are gone: delete it for good (grace 0), only
   * if it is still the same pod (uid precondition). Through the typed client: DeleteOptions
   * travel in the body, which needs a Content-Length on a DELETE.
   */
  const confirmDeletion = async (namespace: string, name: string, uid: string) => {
    try {
      await core.deleteNamespacedPod({
        name,
        namespace,
        body: { gracePeriodSeconds: 0, preconditions: { uid } },
      });
    } catch (e) {
      if (e instanceof ApiException && (e.code === 404 || e.code === 409)) return;
      throw e;
    }
  };

  const terminatePod = async (p: PodState, confirm: boolean) => {
    if (p.gone) return;
    p.terminating = true;
    const grace = Math.min(p.pod.metadata?.deletionGracePeriodSeconds ?? 30, 30) * 1000;
    await Promise.all(p.containers.map((c) => stopContainer(c, true, grace)));
    rmSync(p.dir, { recursive: true, force: true });
    rmSync(p.short, { recursive: true, force: true });
    if (confirm && !p.gone && !stopped) {
      await confirmDeletion(p.namespace, p.name, p.uid);
    }
    p.gone = true;
    pods.delete(p.uid);
  };

  const bind = async (pod: V1Pod) => {
    const sel = pod.spec?.nodeSelector ?? {};
    if (!Object.entries(sel).every(([k, v]) => labels[k as keyof typeof labels] === v)) return;
    const { namespace, name } = pod.metadata!;
    const res = await api('POST', `/api/v1/namespaces/${namespace}/pods/${name}/binding`, {
      apiVersion: 'v1',
      kind: 'Binding',
      metadata: { name, namespace },
      target: { apiVersion: 'v1', kind: 'Node', name: nodeName },
    });
    // 409: another kubelet stand-in (or a retry) bound it first.
    if (res.status !== 201 && res.status !== 200 && res.status !== 409 && res.status !== 404)
      throw new Error(`bind ${namespace}/${name}: ${res.status} ${JSON.stringify(res.body)}`);
  };

  const metaKey = (pod: V1Pod) => JSON.stringify([pod.metadata?.labels, pod.metadata?.annotations]);

  /** `mine`: from the watch of pods bound to this node (the other one only finds pods to bind). */
  const onPod = (type: string, pod: V1Pod, mine: boolean) => {
    if (stopped) return;
    const uid = pod.metadata?.uid;
    if (!uid) return;
    if (!mine) {
      if (
        type !== 'DELETED' &&
        !pod.spec?.nodeName &&
        !pod.metadata?.deletionTimestamp &&
        opts.schedule !== false
      )
        void bind(pod).catch((e: unknown) => console.error(`${label}:`, e));
      return;
    }
    const existing = pods.get(uid);
    if (type === 'DELETED') {
      if (existing) void enqueue(existing, () => terminatePod(existing, false));
      return;
    }
    if (pod.spec?.nodeName !== nodeName) return;
    if (existing) {
      const changed = metaKey(existing.pod) !== metaKey(pod);
      existing.pod = pod;
      if (pod.metadata?.deletionTimestamp) void enqueue(existing, () => terminatePod(existing, true));
      else if (changed) refreshDownward(existing);
      return;
    }
    if (pod.metadata?.deletionTimestamp) {
      // Deleted before it ever ran here: confirm the deletion.
      void confirmDeletion(pod.metadata.namespace!, pod.metadata.name!, uid).catch((e: unknown) =>
        console.error(`${label}:`, e),
      );
      return;
    }
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
    const namespace = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const dir = join(root, 'pods', uid);
    const short = join(shortRoot, String(podSeq++));
    for (const d of [join(root, 'pods'), dir, short]) {
      mkdirSync(d, { recursive: true });
      chmodSync(d, 0o755);
    }
    const p: PodState = {
      uid,
      namespace,
      name,
      pod,
      ip: undefined,
      dir,
      short,
      seen: new Date().toISOString(),
      startTime: new Date().toISOString(),
      terminating: false,
      gone: false,
      owned: new Set(),
      conditionTimes: new Map(),
      lastStatusJson: '',
      chain: Promise.resolve(),
      containers: (pod.spec.containers ?? []).map((spec) => ({
        spec,
        svc: undefined,
        gen: 0,
        marker: undefined,
        held: false,
        restarts: 0,
        ready: false,
        startedAt: undefined,
        waiting: undefined,
        lastTerminated: undefined,
        env: {},
        user: undefined,
        cwd: dir,
        probeTimer: undefined,
        restartTimer: undefined,
        logFile: join(logDir, `kubelet-${nodeName}-${namespace}-${name}-${spec.name}.log`),
      })),
    };
    pods.set(uid, p);
    void enqueue(p, () => setupPod(p));
  };

  // -------------------------------------------------------------------- list + watch
  const streams: { query: { fieldSelector: string; labelSelector?: string }; mine: boolean }[] = [
    { query: { fieldSelector: `spec.nodeName=${nodeName}` }, mine: true },
  ];
  if (opts.schedule !== false)
    streams.push({ query: { fieldSelector: 'spec.nodeName=', labelSelector: PART_OF }, mine: false });
  // A relist shows pods deleted while the watch was down as deletions: a pod of ours gone
  // from the API server is torn down without confirming its deletion.
  for (const s of streams) {
    const ac = new AbortController();
    aborts.push(ac);
    watchAll<V1Pod>(kc, podsType, s.query, ac.signal, label, (type, pod) => onPod(type, pod, s.mine));
  }

  // -------------------------------------------------------------------- handle
  const find = (pod: string): PodState => {
    const [ns, name] = pod.includes('/') ? pod.split('/', 2) : [undefined, pod];
    const matches = [...pods.values()].filter(
      (p) => p.name === name && (ns === undefined || p.namespace === ns) && !p.terminating,
    );
    if (matches.length !== 1)
      throw new Error(`${label}: ${matches.length === 0 ? 'no' : 'several'} running pods named ${pod}`);
    return matches[0]!;
  };

  return {
    nodeName,
    pods: () =>
      [...pods.values()]
        .filter((p) => !p.terminating)
        .map((p) => ({
          namespace: p.namespace,
          name: p.name,
          uid: p.uid,
          ip: p.ip,
          running: p.containers.every((c) => c.svc !== undefined && !c.svc.exited()),
          ready: p.containers.every((c) => c.ready),
          restarts: p.containers.reduce((n, c) => n + c.restarts, 0),
          held: p.containers.some((c) => c.held),
        })),
    logFile: (pod) => find(pod).containers[0]?.logFile,
    hostPath(pod, containerPath, container) {
      const p = find(pod);
      const c = container ? p.containers.find((x) => x.spec.name === container) : p.containers[0];
      return c ? hostPath(p, c.spec, containerPath) : undefined;
    },
    async kill(pod, o = {}) {
      const p = find(pod);
      await Promise.all(p.containers.map((c) => stopContainer(c, o.graceful ?? false)));
    },
    async stop(pod, o = {}) {
      const p = find(pod);
      for (const c of p.containers) c.held = true;
      await Promise.all(p.containers.map((c) => stopContainer(c, o.graceful ?? false)));
      await enqueue(p, () => writeStatus(p));
    },
    async resume(pod) {
      const p = find(pod);
      for (const c of p.containers) {
        c.held = false;
        clearTimeout(c.restartTimer);
      }
      await enqueue(p, async () => {
        for (const c of p.containers) await startContainer(p, c);
      });
    },
    async stopAll() {
      stopped = true;
      clearTimeout(hostsTimer);
      clearInterval(volumeSyncTimer);
      for (const a of aborts) a.abort();
      await Promise.all(
        [...pods.values()].map(async (p) => {
          await Promise.all(p.containers.map((c) => stopContainer(c, true, 5000)));
        }),
      );
      pods.clear();
      rmSync(root, { recursive: true, force: true });
      rmSync(shortRoot, { recursive: true, force: true });
    },
  };
}

function lstatExists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

async function registerNode(kc: KubeConfig, name: string, labels: Record<string, string>): Promise<void> {
  const now = new Date().toISOString();
  const status = {
    capacity: { cpu: '2', memory: '8Gi', pods: '110', 'ephemeral-storage': '50Gi' },
    allocatable: { cpu: '2', memory: '8Gi', pods: '110', 'ephemeral-storage': '50Gi' },
    addresses: [
      { type: 'InternalIP', address: HOST_IP },
      { type: 'Hostname', address: name },
    ],
    conditions: [
      {
        type: 'Ready',
        status: 'True',
        reason: 'KubeletReady',
        message: 'kubelet stand-in is posting ready status',
        lastHeartbeatTime: now,
        lastTransitionTime: now,
      },
    ],
    nodeInfo: {
      machineID: '',
      systemUUID: '',
      bootID: '',
      kernelVersion: '',
      osImage: 'nox kubelet stand-in',
      containerRuntimeVersion: 'standin://0',
      kubeletVersion: 'v0.0.0-standin',
      kubeProxyVersion: '',
      operatingSystem: 'linux',
      architecture: 'amd64',
    },
  };
  const res = await kubeRequest(kc, 'POST', '/api/v1/nodes', {
    body: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name, labels }, status }),
  });
  if (res.status !== 201 && res.status !== 409) throw new Error(`register node ${name}: ${res.status}`);
  const patched = await kubeRequest(kc, 'PATCH', `/api/v1/nodes/${name}/status`, {
    body: JSON.stringify({ status }),
    contentType: 'application/merge-patch+json',
  });
  if (patched.status !== 200) throw new Error(`node ${name} status: ${patched.status}`);
}
