import type { V1Container, V1Pod } from '@kubernetes/client-node';
import type { Service } from '../process.js';
import type { ContainerUser } from './sandbox.js';

/**
 * What the kubelet stand-in knows of a pod and its containers, and the small rules every
 * part of it shares (errors reported as a container's Waiting reason, `$(VAR)` expansion,
 * downward API fields).
 */

export const HOST_IP = '127.0.0.1';

export const isRoot = () => process.getuid?.() === 0;

export interface EnvSources {
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
export class ContainerError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}
export const configError = (message: string) => new ContainerError('CreateContainerConfigError', message);

export interface ContainerState {
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

export interface PodState {
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

/** The kubelet's own annotations on its copy of the pod, which the downward API shows too. */
export const annotations = (p: PodState): Record<string, string> => ({
  ...(p.pod.metadata?.annotations ?? {}),
  'kubernetes.io/config.seen': p.seen,
  'kubernetes.io/config.source': 'api',
});

/** A downward API field of the pod, as the kubelet on `nodeName` reports it. */
export function fieldValue(p: PodState, fieldPath: string, nodeName: string): string {
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
}

const ESC: Record<number, string> = {
  7: '\\a',
  8: '\\b',
  9: '\\t',
  10: '\\n',
  11: '\\v',
  12: '\\f',
  13: '\\r',
};

/** Go's strconv.Quote (fmt's %q of a string): what the kubelet writes downward API values as. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (cp >= 0x20 && cp < 0x7f) out += ch;
    else if (cp < 0x20 || cp === 0x7f) out += ESC[cp] ?? `\\x${cp.toString(16).padStart(2, '0')}`;
    // A lone surrogate cannot reach Go: its JSON decoder makes it U+FFFD, which is printable.
    else if (cp >= 0xd800 && cp <= 0xdfff) out += '\ufffd';
    // unicode.IsPrint: letters, marks, numbers, punctuation, symbols (and only the ASCII space).
    else if (/[\p{L}\p{M}\p{N}\p{P}\p{S}]/u.test(ch)) out += ch;
    else if (cp < 0x10000) out += `\\u${cp.toString(16).padStart(4, '0')}`;
    else out += `\\U${cp.toString(16).padStart(8, '0')}`;
  }
  return `${out}"`;
}

/**
 * A label or annotation map as a downward API file: `key="value"` lines sorted by key (Go's
 * byte order), no trailing newline (the kubelet's fieldpath.FormatMap).
 */
export function formatMap(m: Record<string, string> | undefined): string {
  return Object.keys(m ?? {})
    .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    .map((k) => `${k}=${goQuote(m![k]!)}`)
    .join('\n');
}
