import { Resolver } from 'node:dns/promises';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Service, start, waitUntil } from '../harness/process.js';
import { tool } from '../harness/tools.js';
import { NETWORK } from './addresses.js';
import { type ApiCredentials, ensure } from './api.js';
import { inNetns } from './netns.js';
import type { NodePki } from './pki.js';

/**
 * Cluster DNS: CoreDNS (built by scripts/tools.sh with the kubernetes plugin) as a process in
 * the node's namespace, answering on the node's address, and the `kube-system/kube-dns`
 * Service at NETWORK.dnsServiceIp whose EndpointSlice points at it. Pods ask the ClusterIP
 * as in any cluster; kube-proxy sends them to the process. A process rather than a pod: it
 * is up before the first pod is scheduled and needs no image. No `forward`: the node has no
 * way out, so names outside the cluster are refused at once instead of timing out.
 */
export async function startDns(dir: string, pki: NodePki, creds: ApiCredentials): Promise<Service> {
  const user = 'system:coredns';
  await ensure(creds, '/apis/rbac.authorization.k8s.io/v1/clusterroles', {
    metadata: { name: user },
    rules: [
      {
        apiGroups: [''],
        resources: ['endpoints', 'services', 'pods', 'namespaces'],
        verbs: ['list', 'watch'],
      },
      { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
    ],
  });
  await ensure(creds, '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
    metadata: { name: user },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: user },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }],
  });
  const kubeconfig = await pki.kubeconfig('coredns', creds.server, { cn: user });
  const corefile = join(dir, 'Corefile');
  writeFileSync(
    corefile,
    [
      '.:53 {',
      `  bind ${NETWORK.nodeIp}`,
      '  errors',
      '  ready 127.0.0.1:8181',
      `  kubernetes ${NETWORK.clusterDomain} in-addr.arpa ip6.arpa {`,
      `    kubeconfig ${kubeconfig} nox-node`,
      '    pods insecure',
      '    fallthrough in-addr.arpa ip6.arpa',
      '    ttl 5',
      '  }',
      '  cache 5',
      '  loadbalance',
      '}',
      '',
    ].join('\n'),
  );
  const [cmd, args] = inNetns(tool('coredns'), ['-conf', corefile]);
  const coredns = start('node-coredns', cmd, args, { logFile: join(dir, 'coredns.log') });

  await ensure(creds, '/api/v1/namespaces/kube-system/services', {
    metadata: { name: 'kube-dns', namespace: 'kube-system', labels: { 'k8s-app': 'kube-dns' } },
    spec: {
      clusterIP: NETWORK.dnsServiceIp,
      ports: [
        { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
        { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53 },
      ],
    },
  });
  await ensure(creds, '/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices', {
    metadata: {
      name: 'kube-dns-node',
      namespace: 'kube-system',
      labels: {
        'kubernetes.io/service-name': 'kube-dns',
        'endpointslice.kubernetes.io/managed-by': 'nox-node-harness',
      },
    },
    addressType: 'IPv4',
    endpoints: [{ addresses: [NETWORK.nodeIp], conditions: { ready: true }, nodeName: NETWORK.nodeName }],
    ports: [
      { name: 'dns', port: 53, protocol: 'UDP' },
      { name: 'dns-tcp', port: 53, protocol: 'TCP' },
    ],
  });
  await waitUntil(
    'CoreDNS answers kubernetes.default',
    async () =>
      (await resolveOnNode(`kubernetes.default.svc.${NETWORK.clusterDomain}`)).includes(NETWORK.apiServiceIp),
    60_000,
    coredns,
  );
  return coredns;
}

/** A lookup asked of the node's CoreDNS from the host (through the veth). */
export async function resolveOnNode(name: string): Promise<string[]> {
  const resolver = new Resolver({ timeout: 1000, tries: 1 });
  resolver.setServers([NETWORK.nodeIp]);
  return resolver.resolve4(name);
}
