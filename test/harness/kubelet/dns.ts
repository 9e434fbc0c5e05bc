import type { KubeConfig, V1Pod, V1Service } from '@kubernetes/client-node';
import { pods as podsType, services as servicesType } from '../../../common/kube/resources.js';
import { serviceEndpoints } from './endpoints.js';
import { itemsOf, watchAll } from './watch.js';

/**
 * Cluster DNS, as a hosts file per pod (read through nss_wrapper's NSS_WRAPPER_HOSTS): what
 * the kubelet writes to /etc/hosts (localhost, the pod's own name) plus, from Services and
 * Pods, what CoreDNS would answer for the names a pod of `namespace` can ask for with its
 * search path (<ns>.svc.cluster.local, svc.cluster.local, cluster.local):
 *
 * - a ClusterIP Service: `<svc>.<ns>.svc.cluster.local`, `<svc>.<ns>.svc`, `<svc>.<ns>`, and
 *   `<svc>` from its own namespace → its ClusterIP;
 * - a headless Service: the same names → each ready endpoint's pod IP, and
 *   `<hostname>.<svc>.<ns>.svc[.cluster.local]` (and shorter forms) for pods whose
 *   spec.subdomain is the service (StatefulSet pods).
 *
 * Not answered: ExternalName services (no CNAME in a hosts file), names outside the cluster.
 */
export interface ClusterDns {
  /** The hosts file of a pod: its namespace, hostname (and subdomain) and IP. */
  hostsFile(pod: V1Pod, podIP: string): string;
  /** Resolves once Services and Pods have been listed. */
  readonly synced: Promise<void>;
}

const DOMAIN = 'cluster.local';

/** The names a pod in `from` reaches `<first>.<ns>` by (`first` may contain dots). */
function names(first: string, ns: string, from: string): string[] {
  const out = [`${first}.${ns}.svc.${DOMAIN}`, `${first}.${ns}.svc`, `${first}.${ns}`];
  if (ns === from) out.push(first);
  return out;
}

export function startClusterDns(
  kc: KubeConfig,
  signal: AbortSignal,
  onChange: () => void,
  label: string,
): ClusterDns {
  const services = watchAll<V1Service>(kc, servicesType, {}, signal, label, onChange);
  const pods = watchAll<V1Pod>(kc, podsType, {}, signal, label, onChange);
  return {
    synced: Promise.all([services.whenSynced(), pods.whenSynced()]).then(() => undefined),
    hostsFile(pod, podIP) {
      const ns = pod.metadata?.namespace ?? '';
      const hostname = pod.spec?.hostname || pod.metadata?.name || '';
      const sub = pod.spec?.subdomain;
      // No comments: nss_wrapper rejects the whole file over one.
      const lines = [
        '127.0.0.1\tlocalhost',
        '::1\tlocalhost ip6-localhost ip6-loopback',
        sub ? `${podIP}\t${hostname}.${sub}.${ns}.svc.${DOMAIN}\t${hostname}` : `${podIP}\t${hostname}`,
      ];
      const svcs = itemsOf<V1Service>(services).sort((a, b) =>
        `${a.metadata?.namespace}/${a.metadata?.name}`.localeCompare(
          `${b.metadata?.namespace}/${b.metadata?.name}`,
        ),
      );
      for (const svc of svcs) {
        const name = svc.metadata?.name ?? '';
        const sns = svc.metadata?.namespace ?? '';
        const ip = svc.spec?.clusterIP;
        if (svc.spec?.type === 'ExternalName') continue;
        if (ip && ip !== 'None') {
          lines.push(`${ip}\t${names(name, sns, ns).join(' ')}`);
          continue;
        }
        for (const ep of serviceEndpoints(svc, itemsOf<V1Pod>(pods))) {
          if (!ep.ready) continue;
          lines.push(`${ep.ip}\t${names(name, sns, ns).join(' ')}`);
          if (ep.hostname) lines.push(`${ep.ip}\t${names(`${ep.hostname}.${name}`, sns, ns).join(' ')}`);
        }
      }
      return `${lines.join('\n')}\n`;
    },
  };
}
