import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig, V1Container, V1Pod, V1Probe } from '@kubernetes/client-node';
import { ApiException, CoreV1Api } from '@kubernetes/client-node';
import { pods as podsType } from '../../../common/kube/resources.js';
import type { Kube } from '../kube.js';
import { kubeRequest } from '../kubeHttp.js';
import { sharedScratchDir, start } from '../process.js';
import { runDir } from '../tools.js';
import { type ClusterDns, startClusterDns } from './dns.js';
import {
  ContainerError,
  type ContainerState,
  configError,
  type EnvSources,
  expandVars,
  HOST_IP,
  type PodState,
} from './pod.js';
import { runtimeFor, UnsupportedImage } from './runtimes.js';
import {
  type ContainerUser,
  containerPids,
  containerUser,
  ipAllocator,
  killContainer,
  podEnv,
  RunAsRoot,
  stopContainer,
} from './sandbox.js';
import { podVolumes, writeFileAtomic } from './volumes.js';
import { watchAll } from './watch.js';

export { expandVars } from './pod.js';

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
  /**
   * SIGSTOP (`frozen`) or SIGCONT every process of the pod's containers: a paused VM or a node
   * that stalls. Probes go on and fail; nothing is restarted.
   */
  freeze(pod: string, frozen: boolean): void;
  /**
   * While `cut`, changes of the pod's labels and annotations stop reaching its downward API
   * files: a kubelet that cannot see the API server. Lifting it writes them at once.
   */
  cutMetadata(pod: string, cut: boolean): void;
  /** Stops watching and stops every process (gracefully); leaves the API objects alone. */
  stopAll(): Promise<void>;
}

const PART_OF = 'app.kubernetes.io/part-of=nox';

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

  const allocateIp = ipAllocator(nodeName);

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

  const { setupVolumes, refreshDownward, refreshConfigVolumes, hostPath, mapArg } = podVolumes({
    nodeName,
    root,
    sources,
    api,
    stopped: () => stopped,
  });
  const volumeSyncTimer = setInterval(() => {
    for (const p of pods.values()) void enqueue(p, () => refreshConfigVolumes(p).catch(() => {}));
  }, opts.volumeSyncMs ?? 1000);
  volumeSyncTimer.unref();

  const { resolveEnv, processEnv, resolveExecutable, cleanEnv, runProbe } = podEnv({
    nodeName,
    sources,
    hostPath,
    mapArg,
    hostsFile,
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
      else if (changed && !metadataCut.has(existing.uid)) refreshDownward(existing);
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
  /** Pods whose downward API files are not refreshed (cutMetadata). */
  const metadataCut = new Set<string>();
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
    freeze(pod, frozen) {
      for (const c of find(pod).containers) {
        if (!c.marker) continue;
        for (const pid of containerPids(c.marker).filter((x) => x !== process.pid)) {
          try {
            process.kill(pid, frozen ? 'SIGSTOP' : 'SIGCONT');
          } catch {
            /* gone */
          }
        }
      }
    },
    cutMetadata(pod, cut) {
      const p = find(pod);
      if (cut) metadataCut.add(p.uid);
      else if (metadataCut.delete(p.uid)) refreshDownward(p);
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
