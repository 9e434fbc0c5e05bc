/**
 * The test node's network plan. One node runs on a machine at a time (see lock.ts), so the
 * plan is fixed; it avoids the host's own subnets, and startNode checks that the host has no
 * route into any of them before it adds its own.
 */
export const NETWORK = {
  /** The network namespace every node process runs in. */
  netns: 'nox-node',
  /** The veth pair between the host and the node's namespace (names ≤ 15 characters). */
  hostLink: 'nox-node-host',
  nodeLink: 'nox-node-eth0',
  /** The host's end of the veth; the only host address the node can reach. */
  hostIp: '172.29.213.1',
  /** The node's address: kube-apiserver, the kubelet, NodePorts and CoreDNS listen here. */
  nodeIp: '172.29.213.2',
  linkPrefix: 24,
  /** Pods' addresses: the CNI bridge `cni0` in the node's namespace, host-local IPAM. */
  podCidr: '10.213.0.0/24',
  podGateway: '10.213.0.1',
  /** ClusterIPs; the first is `kubernetes.default`, .10 is `kube-dns`. */
  serviceCidr: '10.214.0.0/24',
  apiServiceIp: '10.214.0.1',
  dnsServiceIp: '10.214.0.10',
  clusterDomain: 'cluster.local',
  /** Ports on the node's address. */
  apiServerPort: 6443,
  kubeletPort: 10250,
  /** The kubelets's cgroup root: every pod's cgroups sit under /sys/fs/cgroup/<controller>/nox-node/kubepods. */
  cgroupRoot: 'nox-node',
  nodeName: 'nox-node',
} as const;

/** The routes the host gets through the veth: to the pods and to the Services, nothing else. */
export const ROUTED_FROM_HOST = [NETWORK.podCidr, NETWORK.serviceCidr] as const;
