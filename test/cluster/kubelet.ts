import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { type Service, start } from '../harness/process.js';
import { tool } from '../harness/tools.js';
import { NETWORK } from './addresses.js';
import { inNetns } from './netns.js';
import type { NodePki } from './pki.js';

/**
 * The kubelet: cgroupfs under its own cgroup root (so everything it makes is under
 * /sys/fs/cgroup/<controller>/nox-node), cgroup v1 allowed, its root, logs and certificates
 * under the node's directory, containerd's CRI socket, the node's address.
 */
export async function startKubelet(
  dir: string,
  pki: NodePki,
  criSocket: string,
  server: string,
): Promise<Service> {
  const root = join(dir, 'kubelet');
  mkdirSync(join(dir, 'pod-logs'), { recursive: true });
  mkdirSync(root, { recursive: true });
  const serving = await pki.issue('kubelet', { cn: NETWORK.nodeName }, 'server', [
    `IP:${NETWORK.nodeIp}`,
    `DNS:${NETWORK.nodeName}`,
  ]);
  const kubeconfig = await pki.kubeconfig('kubelet-client', server, {
    cn: `system:node:${NETWORK.nodeName}`,
    o: ['system:nodes'],
  });
  // Pods' DNS: the kubelet writes nameserver <clusterDNS> and the cluster's search path into
  // every ClusterFirst pod; this file is only the base, kept free of the host's search list.
  const resolvConf = join(dir, 'resolv.conf');
  writeFileSync(resolvConf, `nameserver ${NETWORK.nodeIp}\n`);
  const config = join(dir, 'kubelet.yaml');
  writeFileSync(
    config,
    stringify({
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      address: NETWORK.nodeIp,
      port: NETWORK.kubeletPort,
      readOnlyPort: 0,
      healthzBindAddress: '127.0.0.1',
      healthzPort: 10248,
      tlsCertFile: serving.cert,
      tlsPrivateKeyFile: serving.key,
      authentication: {
        anonymous: { enabled: false },
        webhook: { enabled: true },
        x509: { clientCAFile: pki.caCert },
      },
      authorization: { mode: 'Webhook' },
      containerRuntimeEndpoint: `unix://${criSocket}`,
      cgroupDriver: 'cgroupfs',
      cgroupRoot: `/${NETWORK.cgroupRoot}`,
      // This kernel mounts cgroup v1 hierarchies (hybrid layout); 1.34 refuses them by default.
      failCgroupV1: false,
      failSwapOn: false,
      clusterDNS: [NETWORK.dnsServiceIp],
      clusterDomain: NETWORK.clusterDomain,
      resolvConf,
      podLogsDir: join(dir, 'pod-logs'),
      serializeImagePulls: false,
      // Images are imported, never pulled: the kubelet must not collect them on a full disk.
      imageGCHighThresholdPercent: 100,
      imageGCLowThresholdPercent: 99,
      // The machine is shared and busy; only evict when it is really out of room.
      evictionHard: { 'memory.available': '50Mi', 'nodefs.available': '2%', 'imagefs.available': '2%' },
      // Faster status for tests: pod and node changes show up within a second or two.
      nodeStatusUpdateFrequency: '4s',
      syncFrequency: '10s',
      fileCheckFrequency: '10s',
      maxPods: 110,
      rotateCertificates: false,
      serverTLSBootstrap: false,
    }),
  );
  const [cmd, args] = inNetns(tool('kubelet'), [
    `--config=${config}`,
    `--kubeconfig=${kubeconfig}`,
    `--root-dir=${root}`,
    `--hostname-override=${NETWORK.nodeName}`,
    `--node-ip=${NETWORK.nodeIp}`,
    '--v=1',
  ]);
  return start('node-kubelet', cmd, args, {
    logFile: join(dir, 'kubelet.log'),
    // The kubelet runs iptables, mount, umount, nsenter from PATH.
    env: { PATH: process.env.PATH },
  });
}

/** kube-proxy in iptables mode; its chains live in the node's network namespace. */
export async function startKubeProxy(dir: string, pki: NodePki, server: string): Promise<Service> {
  const kubeconfig = await pki.kubeconfig('kube-proxy', server, { cn: 'system:kube-proxy' });
  const config = join(dir, 'kube-proxy.yaml');
  writeFileSync(
    config,
    stringify({
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      mode: 'iptables',
      clientConnection: { kubeconfig },
      hostnameOverride: NETWORK.nodeName,
      bindAddress: NETWORK.nodeIp,
      clusterCIDR: NETWORK.podCidr,
      healthzBindAddress: '127.0.0.1:10256',
      metricsBindAddress: '127.0.0.1:10249',
      // The conntrack table size and timeouts are global (nf_conntrack's hashsize module
      // parameter) or would outlive the node; zero tells kube-proxy to leave them alone.
      conntrack: {
        maxPerCore: 0,
        min: 0,
        tcpEstablishedTimeout: '0s',
        tcpCloseWaitTimeout: '0s',
      },
      // Rules follow Service changes within a second.
      iptables: { syncPeriod: '10s', minSyncPeriod: '0s' },
    }),
  );
  const [cmd, args] = inNetns(tool('kube-proxy'), [`--config=${config}`, '--v=1']);
  return start('node-kube-proxy', cmd, args, { logFile: join(dir, 'kube-proxy.log') });
}
