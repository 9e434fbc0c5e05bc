import type { V1Pod, V1Service, V1ServicePort } from '@kubernetes/client-node';

/**
 * A Service's endpoints, computed from Pods the way the EndpointSlice controller does. The
 * stand-ins cannot read them from EndpointSlices: the API server refuses loopback addresses
 * in an EndpointSlice ("may not be in the loopback range"), and every pod IP here is one, so
 * kube-controller-manager's endpointslice controller never manages to write them.
 */
export interface Endpoint {
  ip: string;
  /** The target port for the service port asked for (0 when none was asked for, or unresolvable). */
  port: number;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  /** Set when the pod's spec.subdomain names this (headless) service: its DNS hostname. */
  hostname: string | undefined;
  pod: string;
}

export function podReady(pod: V1Pod): boolean {
  return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

function targetPort(pod: V1Pod, port: V1ServicePort): number {
  const tp = port.targetPort as number | string | undefined;
  if (tp === undefined || tp === '' || tp === 0) return port.port;
  if (typeof tp === 'number') return tp;
  if (/^\d+$/.test(tp)) return Number(tp);
  const proto = port.protocol ?? 'TCP';
  for (const c of pod.spec?.containers ?? [])
    for (const cp of c.ports ?? [])
      if (cp.name === tp && (cp.protocol ?? 'TCP') === proto) return cp.containerPort;
  return 0;
}

/** Endpoints of `svc` (for `port`, if given) among `pods`; none for a Service without selector. */
export function serviceEndpoints(svc: V1Service, pods: Iterable<V1Pod>, port?: V1ServicePort): Endpoint[] {
  const selector = svc.spec?.selector;
  if (!selector || Object.keys(selector).length === 0) return [];
  const ns = svc.metadata?.namespace;
  const publishNotReady = svc.spec?.publishNotReadyAddresses === true;
  const out: Endpoint[] = [];
  for (const pod of pods) {
    if (pod.metadata?.namespace !== ns) continue;
    const ip = pod.status?.podIP;
    if (!ip || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') continue;
    const labels = pod.metadata?.labels ?? {};
    if (!Object.entries(selector).every(([k, v]) => labels[k] === v)) continue;
    const terminating =
      pod.metadata?.deletionTimestamp !== undefined && pod.metadata?.deletionTimestamp !== null;
    const ok = podReady(pod);
    const p = port ? targetPort(pod, port) : 0;
    if (port && p === 0) continue;
    out.push({
      ip,
      port: p,
      ready: publishNotReady || (ok && !terminating),
      serving: publishNotReady || ok,
      terminating,
      hostname: pod.spec?.subdomain === svc.metadata?.name ? (pod.spec?.hostname ?? undefined) : undefined,
      pod: pod.metadata?.name ?? '',
    });
  }
  return out;
}
