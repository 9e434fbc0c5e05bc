import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import type { KubeConfig, V1Container, V1EnvVar, V1Pod, V1Probe, V1Volume } from '@kubernetes/client-node';
import { ApiException, CoreV1Api, Watch } from '@kubernetes/client-node';
import type { Kube } from './kube.js';
import { kubeRequest } from './kubeHttp.js';
import { isFree } from './ports.js';
import { type Service, scratchDir, start } from './process.js';
import { runDir, tool, toolsBin } from './tools.js';

/**
 * A stand-in for the kubelet, and only for that: nothing here runs containers, so for each
 * pod bound to its Node it starts the real process the container's image would run
 * (redis-server for `redis:*`) on a loopback address of the pod's own (127.0.n.m), and
 * reports the pod's IP, phase, container states and readiness to the API server the way a
 * kubelet does. Code under test (the operator) sees ordinary Pods and cannot tell.
 *
 * What it emulates:
 * - registration: a Node object (Ready, InternalIP 127.0.0.1) with `nodeName`;
 * - scheduling, since the harness has no scheduler: unscheduled pods labelled
 *   `app.kubernetes.io/part-of=nox` whose nodeSelector matches are bound to this node
 *   (binding subresource);
 * - the pod sandbox: one loopback IP per pod (kept across container restarts, a new one for
 *   a new pod), a directory per pod holding its volumes: ConfigMap and Secret volumes written
 *   as files, projected volumes (the service-account token through the TokenRequest API,
 *   the CA bundle, downward API items), emptyDir, and persistentVolumeClaim volumes as a
 *   directory per claim that outlives the pod (as a bound PV would);
 * - the container: env (value with `$(VAR)` expansion, fieldRef, secretKeyRef,
 *   configMapKeyRef, envFrom), command/args with `$(VAR)` expansion, container paths under a
 *   volume mount mapped to the volume's directory (args, workingDir, probe commands), and
 *   the network namespace: a process that would listen on 0.0.0.0 inside its pod listens on
 *   the pod IP here (for redis: `--bind <podIP> --bind-source-addr <podIP>`);
 * - restartPolicy Always: an exited container is restarted (same IP, same volumes) after
 *   `restartDelayMs`, with restartCount and lastState reported;
 * - readiness probes (exec, tcpSocket, httpGet) with initialDelay/period/timeout/thresholds;
 *   a container that is not running is not ready at once;
 * - graceful deletion: a pod with a deletionTimestamp has its processes stopped (SIGTERM,
 *   then SIGKILL after the grace period), its volumes removed (not the PVC directories), and
 *   is then deleted for good, as the kubelet confirms a deletion.
 *
 * Not emulated: init containers, liveness/startup probes, resource limits, image pulls,
 * ports other than through the pod IP. Images without a runtime here stay Waiting with
 * reason `ImageNotSupportedByStandIn` (postgres:* is a TODO).
 */
export interface KubeletOptions {
  nodeName: string;
  /** Labels of the Node (a pod's nodeSelector must match them to be bound here). */
  labels?: Record<string, string>;
  /** Bind unscheduled Nox pods to this node (default true). */
  schedule?: boolean;
  /** Delay before an exited container is started again (a real kubelet backs off from 10 s). Default 1000. */
  restartDelayMs?: number;
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

// ---------------------------------------------------------------------------------------
// Image runtimes: what a container image would run, as a host command.

interface ImageRuntime {
  /** argv (Kubernetes semantics: command replaces ENTRYPOINT, args replace CMD) → host argv. */
  argv(command: string[] | undefined, args: string[] | undefined): string[];
  /** Extra args that put the process in "its own network namespace": listen on the pod IP only. */
  networkArgs(podIP: string): string[];
  /** Ports the process listens on besides the declared containerPorts (redis: the cluster bus). */
  extraPorts(ports: number[]): number[];
}

class UnsupportedImage extends Error {}

/** `docker.io/library/redis:7.0` → `redis`. */
function imageName(image: string): string {
  const noDigest = image.split('@')[0]!;
  const lastSlash = noDigest.lastIndexOf('/');
  const colon = noDigest.lastIndexOf(':');
  const noTag = colon > lastSlash ? noDigest.slice(0, colon) : noDigest;
  return noTag.slice(lastSlash + 1);
}

const redisRuntime: ImageRuntime = {
  argv(command, args) {
    // The official image: ENTRYPOINT docker-entrypoint.sh, CMD redis-server; the entrypoint
    // prepends redis-server when the first argument is an option or a .conf file.
    let argv = command?.length ? [...command, ...(args ?? [])] : args?.length ? [...args] : ['redis-server'];
    if (argv[0] === 'docker-entrypoint.sh') argv = argv.slice(1);
    if (argv.length === 0) argv = ['redis-server'];
    if (argv[0]!.startsWith('-') || argv[0]!.endsWith('.conf')) argv = ['redis-server', ...argv];
    const bin = argv[0]!.split('/').pop();
    if (bin !== 'redis-server') throw new UnsupportedImage(`redis image: cannot run ${argv[0]}`);
    return [tool('redis-server'), ...argv.slice(1)];
  },
  networkArgs: (ip) => ['--bind', ip, '--bind-source-addr', ip],
  extraPorts: (ports) => ports.map((p) => p + 10000).filter((p) => p <= 65535),
};

function runtimeFor(image: string): ImageRuntime {
  const name = imageName(image);
  if (name === 'redis') return redisRuntime;
  // TODO(postgres): run tool('postgres') for postgres:* images (initdb on an empty PGDATA as
  // the image's entrypoint does, as a non-root user).
  throw new UnsupportedImage(`the kubelet stand-in has no runtime for image ${image}`);
}

// ---------------------------------------------------------------------------------------

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

class ConfigError extends Error {}

interface ContainerState {
  readonly spec: V1Container;
  svc: Service | undefined;
  /** Incremented per start; probes and exit handlers of an older start are ignored. */
  gen: number;
  held: boolean;
  restarts: number;
  ready: boolean;
  startedAt: string | undefined;
  waiting: { reason: string; message: string } | undefined;
  lastTerminated: { exitCode: number; reason: string; startedAt?: string; finishedAt: string } | undefined;
  env: Record<string, string>;
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
  containers: ContainerState[];
  startTime: string;
  terminating: boolean;
  gone: boolean;
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
  const root = scratchDir(`kubelet-${nodeName}`);
  const logDir = join(runDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const pods = new Map<string, PodState>(); // by uid
  const aborts: AbortController[] = [];
  let stopped = false;

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
      if (!stopped) console.error(`kubelet ${nodeName}: pod ${p.namespace}/${p.name}:`, e);
    });
    return p.chain;
  };

  // -------------------------------------------------------------------- volumes
  const volumeDir = (p: PodState, v: V1Volume): string => {
    if (v.persistentVolumeClaim) return join(root, 'pvc', p.namespace, v.persistentVolumeClaim.claimName);
    return join(p.dir, 'volumes', v.name);
  };

  const writeKeys = (
    dir: string,
    data: Record<string, string>,
    items: { key: string; path: string; mode?: number }[] | undefined,
    defaultMode: number | undefined,
  ) => {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const entries: { key: string; path: string; mode?: number }[] =
      items ?? Object.keys(data).map((key) => ({ key, path: key }));
    for (const item of entries) {
      const value = data[item.key];
      if (value === undefined) throw new ConfigError(`key ${item.key} not found`);
      const file = join(dir, item.path);
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, value);
      chmodSync(file, item.mode ?? defaultMode ?? 0o644);
    }
  };

  /** Materialises the pod's volumes; throws ConfigError while a referenced object is missing. */
  const setupVolumes = async (p: PodState) => {
    for (const v of p.pod.spec?.volumes ?? []) {
      const dir = volumeDir(p, v);
      if (v.configMap) {
        const data = await sources.configMap(p.namespace, v.configMap.name!);
        if (data === undefined) {
          if (v.configMap.optional) continue;
          throw new ConfigError(`configmap "${v.configMap.name}" not found`);
        }
        writeKeys(dir, data, v.configMap.items, v.configMap.defaultMode);
      } else if (v.secret) {
        const data = await sources.secret(p.namespace, v.secret.secretName!);
        if (data === undefined) {
          if (v.secret.optional) continue;
          throw new ConfigError(`secret "${v.secret.secretName}" not found`);
        }
        writeKeys(dir, data, v.secret.items, v.secret.defaultMode);
      } else if (v.projected || v.downwardAPI) {
        // The service-account volume (kube-api-access-*) and friends: files from several sources.
        rmSync(dir, { recursive: true, force: true });
        mkdirSync(dir, { recursive: true });
        const put = (path: string, value: string, mode?: number) => {
          const file = join(dir, path);
          mkdirSync(dirname(file), { recursive: true });
          writeFileSync(file, value);
          chmodSync(file, mode ?? v.projected?.defaultMode ?? v.downwardAPI?.defaultMode ?? 0o644);
        };
        const downward = (items: { path: string; fieldRef?: { fieldPath: string }; mode?: number }[]) => {
          for (const item of items)
            if (item.fieldRef) put(item.path, fieldValue(p, item.fieldRef.fieldPath), item.mode);
        };
        if (v.downwardAPI) downward(v.downwardAPI.items ?? []);
        for (const src of v.projected?.sources ?? []) {
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
              throw new ConfigError(`token for serviceaccount ${sa}: HTTP ${res.status}`);
            put(
              src.serviceAccountToken.path,
              (res.body as { status: { token: string } }).status.token,
              0o600,
            );
          } else if (src.configMap || src.secret) {
            const ref = (src.configMap ?? src.secret)!;
            const data = src.configMap
              ? await sources.configMap(p.namespace, ref.name!)
              : await sources.secret(p.namespace, ref.name!);
            if (data === undefined) {
              if (ref.optional) continue;
              throw new ConfigError(`${src.configMap ? 'configmap' : 'secret'} "${ref.name}" not found`);
            }
            const items = ref.items ?? Object.keys(data).map((key) => ({ key, path: key }));
            for (const item of items) {
              const value = data[item.key];
              if (value === undefined) throw new ConfigError(`key ${item.key} not found in ${ref.name}`);
              put(item.path, value, (item as { mode?: number }).mode);
            }
          } else if (src.downwardAPI) {
            downward(src.downwardAPI.items ?? []);
          }
        }
      } else if (v.emptyDir || v.persistentVolumeClaim) {
        mkdirSync(dir, { recursive: true });
      } else {
        throw new ConfigError(
          `volume ${v.name}: only configMap, secret, projected, downwardAPI, emptyDir and PVC volumes are emulated`,
        );
      }
    }
  };

  /** Container path → host path, through the container's volume mounts (longest prefix wins). */
  const hostPath = (p: PodState, c: V1Container, path: string): string | undefined => {
    let best: { mount: string; dir: string } | undefined;
    for (const m of c.volumeMounts ?? []) {
      const mount = m.mountPath.replace(/\/+$/, '') || '/';
      if (path !== mount && !path.startsWith(`${mount}/`)) continue;
      if (best && best.mount.length >= mount.length) continue;
      const vol = p.pod.spec?.volumes?.find((v) => v.name === m.name);
      if (!vol) continue;
      best = { mount, dir: join(volumeDir(p, vol), m.subPath ?? '') };
    }
    return best ? join(best.dir, path.slice(best.mount.length)) : undefined;
  };
  const mapArg = (p: PodState, c: V1Container, arg: string) =>
    arg.startsWith('/') ? (hostPath(p, c, arg) ?? arg) : arg;

  // -------------------------------------------------------------------- env
  const fieldValue = (p: PodState, fieldPath: string): string => {
    const m = p.pod.metadata!;
    const label = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
    if (label) return (label[1] === 'labels' ? m.labels : m.annotations)?.[label[2]!] ?? '';
    switch (fieldPath) {
      case 'metadata.name':
        return m.name ?? '';
      case 'metadata.namespace':
        return m.namespace ?? '';
      case 'metadata.uid':
        return m.uid ?? '';
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
        throw new ConfigError(`fieldRef ${fieldPath} is not supported`);
    }
  };

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
        throw new ConfigError(`envFrom: ${from.configMapRef?.name ?? from.secretRef?.name} not found`);
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
        throw new ConfigError(
          `${vf.secretKeyRef ? 'secret' : 'configmap'} "${ref.name}" key "${ref.key}" not found`,
        );
      }
      return value;
    }
    throw new ConfigError(`env ${e.name}: resourceFieldRef is not supported`);
  };

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
    let argv: string[];
    let env: Record<string, string>;
    let runtime: ImageRuntime;
    try {
      runtime = runtimeFor(c.spec.image ?? '');
      await setupVolumes(p);
      env = await resolveEnv(p, c.spec);
      const expand = (list: string[] | undefined) => list?.map((s) => mapArg(p, c.spec, expandVars(s, env)));
      argv = [...runtime.argv(expand(c.spec.command), expand(c.spec.args)), ...runtime.networkArgs(p.ip!)];
    } catch (e) {
      if (e instanceof UnsupportedImage) {
        c.waiting = { reason: 'ImageNotSupportedByStandIn', message: e.message };
        await writeStatus(p);
        return; // no retry: the image will not become supported
      }
      if (!(e instanceof ConfigError)) throw e;
      c.waiting = { reason: 'CreateContainerConfigError', message: e.message };
      await writeStatus(p);
      c.restartTimer = setTimeout(() => void enqueue(p, () => startContainer(p, c)), 1000);
      return;
    }
    const cwd = c.spec.workingDir ? (hostPath(p, c.spec, c.spec.workingDir) ?? p.dir) : p.dir;
    mkdirSync(cwd, { recursive: true });
    const gen = ++c.gen;
    const svc = start(`pod-${p.namespace}-${p.name}-${c.spec.name}`, argv[0]!, argv.slice(1), {
      cwd,
      env: { ...env, PATH: `${toolsBin}:${process.env.PATH ?? ''}` },
      logFile: c.logFile,
    });
    c.svc = svc;
    c.env = env;
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
        c.restartTimer = setTimeout(() => void enqueue(p, () => startContainer(p, c)), restartDelayMs);
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
      const argv = probe.exec.command.map((a) => mapArg(p, c.spec, a));
      return new Promise((resolve) => {
        const child = spawn(argv[0]!, argv.slice(1), {
          cwd: p.dir,
          env: { ...c.env, PATH: `${toolsBin}:${process.env.PATH ?? ''}`, HOME: p.dir },
          stdio: 'ignore',
          timeout: timeoutMs,
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

  const stopContainer = async (c: ContainerState, graceful: boolean, graceMs = 10_000) => {
    clearTimeout(c.probeTimer);
    clearTimeout(c.restartTimer);
    c.ready = false;
    const svc = c.svc;
    if (!svc || svc.exited()) return;
    if (graceful) await svc.stop(graceMs);
    else await svc.kill();
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
        void bind(pod).catch((e: unknown) => console.error(`kubelet ${nodeName}:`, e));
      return;
    }
    const existing = pods.get(uid);
    if (type === 'DELETED') {
      if (existing) void enqueue(existing, () => terminatePod(existing, false));
      return;
    }
    if (pod.spec?.nodeName !== nodeName) return;
    if (existing) {
      existing.pod = pod;
      if (pod.metadata?.deletionTimestamp) void enqueue(existing, () => terminatePod(existing, true));
      return;
    }
    if (pod.metadata?.deletionTimestamp) {
      // Deleted before it ever ran here: confirm the deletion.
      void confirmDeletion(pod.metadata.namespace!, pod.metadata.name!, uid).catch((e: unknown) =>
        console.error(`kubelet ${nodeName}:`, e),
      );
      return;
    }
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
    const namespace = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const dir = join(root, 'pods', uid);
    mkdirSync(dir, { recursive: true });
    const p: PodState = {
      uid,
      namespace,
      name,
      pod,
      ip: undefined,
      dir,
      startTime: new Date().toISOString(),
      terminating: false,
      gone: false,
      conditionTimes: new Map(),
      lastStatusJson: '',
      chain: Promise.resolve(),
      containers: (pod.spec.containers ?? []).map((spec) => ({
        spec,
        svc: undefined,
        gen: 0,
        held: false,
        restarts: 0,
        ready: false,
        startedAt: undefined,
        waiting: undefined,
        lastTerminated: undefined,
        env: {},
        probeTimer: undefined,
        restartTimer: undefined,
        logFile: join(logDir, `kubelet-${nodeName}-${namespace}-${name}-${spec.name}.log`),
      })),
    };
    pods.set(uid, p);
    void enqueue(p, () => setupPod(p));
  };

  // -------------------------------------------------------------------- list + watch
  const streams: { query: Record<string, string>; mine: boolean }[] = [
    { query: { fieldSelector: `spec.nodeName=${nodeName}` }, mine: true },
  ];
  if (opts.schedule !== false)
    streams.push({ query: { fieldSelector: 'spec.nodeName=', labelSelector: PART_OF }, mine: false });

  const runStream = async (query: Record<string, string>, mine: boolean, signal: AbortSignal) => {
    const watch = new Watch(kc);
    while (!signal.aborted) {
      try {
        const qs = new URLSearchParams(query).toString();
        const list = await api('GET', `/api/v1/pods?${qs}`);
        if (list.status !== 200) throw new Error(`list pods: ${list.status}`);
        const body = list.body as { items: V1Pod[]; metadata: { resourceVersion: string } };
        if (mine) {
          const seen = new Set(body.items.map((i) => i.metadata?.uid));
          for (const p of [...pods.values()]) if (!seen.has(p.uid)) onPod('DELETED', p.pod, true);
        }
        for (const item of body.items) onPod('ADDED', item, mine);
        await new Promise<void>((resolve) => {
          let ctl: AbortController | undefined;
          const done = () => {
            signal.removeEventListener('abort', abort);
            resolve();
          };
          const abort = () => {
            ctl?.abort();
            done();
          };
          signal.addEventListener('abort', abort, { once: true });
          watch
            .watch(
              '/api/v1/pods',
              {
                ...query,
                resourceVersion: body.metadata.resourceVersion,
                allowWatchBookmarks: true,
                timeoutSeconds: 300,
              },
              (type: string, obj: V1Pod) => {
                if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') onPod(type, obj, mine);
              },
              () => done(),
            )
            .then(
              (c) => {
                ctl = c;
                if (signal.aborted) c.abort();
              },
              () => done(),
            );
        });
      } catch (e) {
        if (!signal.aborted) console.error(`kubelet ${nodeName}: pod watch:`, e);
      }
      if (!signal.aborted) await new Promise((r) => setTimeout(r, 500));
    }
  };
  for (const s of streams) {
    const ac = new AbortController();
    aborts.push(ac);
    void runStream(s.query, s.mine, ac.signal);
  }

  // -------------------------------------------------------------------- handle
  const find = (pod: string): PodState => {
    const [ns, name] = pod.includes('/') ? pod.split('/', 2) : [undefined, pod];
    const matches = [...pods.values()].filter(
      (p) => p.name === name && (ns === undefined || p.namespace === ns) && !p.terminating,
    );
    if (matches.length !== 1)
      throw new Error(
        `kubelet ${nodeName}: ${matches.length === 0 ? 'no' : 'several'} running pods named ${pod}`,
      );
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
      for (const a of aborts) a.abort();
      await Promise.all(
        [...pods.values()].map(async (p) => {
          await Promise.all(p.containers.map((c) => stopContainer(c, true, 5000)));
        }),
      );
      pods.clear();
      rmSync(root, { recursive: true, force: true });
    },
  };
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
