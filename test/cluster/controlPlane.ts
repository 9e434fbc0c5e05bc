import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Service, start, waitUntil } from '../harness/process.js';
import { tool } from '../harness/tools.js';
import { NETWORK } from './addresses.js';
import { type ApiCredentials, api } from './api.js';
import { inNetns } from './netns.js';
import type { NodePki } from './pki.js';

export interface ControlPlane {
  readonly services: Service[];
  readonly creds: ApiCredentials;
  /** The admin's kubeconfig (system:masters), server https://<node ip>:6443. */
  readonly kubeconfigPath: string;
}

function startInNetns(name: string, bin: string, args: string[], dir: string): Service {
  const [cmd, a] = inNetns(tool(bin), args);
  return start(`node-${name}`, cmd, a, { logFile: join(dir, `${name}.log`) });
}

/**
 * etcd (on the namespace's loopback), kube-apiserver on the node's address, the
 * controller-manager (every default controller, the PersistentVolume binder included) and the
 * scheduler, all in the node's network namespace. Authorization is Node + RBAC with the
 * NodeRestriction admission plugin, as a kubeadm cluster has it.
 */
export async function startControlPlane(dir: string, pki: NodePki): Promise<ControlPlane> {
  const services: Service[] = [];
  const server = `https://${NETWORK.nodeIp}:${NETWORK.apiServerPort}`;
  const [serving, kubeletClient, admin] = await Promise.all([
    pki.issue('apiserver', { cn: 'kube-apiserver' }, 'server', [
      `IP:${NETWORK.nodeIp}`,
      `IP:${NETWORK.apiServiceIp}`,
      'IP:127.0.0.1',
      'DNS:localhost',
      'DNS:kubernetes',
      'DNS:kubernetes.default',
      'DNS:kubernetes.default.svc',
      `DNS:kubernetes.default.svc.${NETWORK.clusterDomain}`,
    ]),
    pki.issue(
      'apiserver-kubelet-client',
      { cn: 'kube-apiserver-kubelet-client', o: ['system:masters'] },
      'client',
    ),
    pki.issue('admin', { cn: 'nox-node-admin', o: ['system:masters'] }, 'client'),
  ]);
  const creds: ApiCredentials = {
    server,
    ca: pki.caPem,
    cert: readFileSync(admin.cert, 'utf8'),
    key: readFileSync(admin.key, 'utf8'),
  };
  const kubeconfigPath = await pki.kubeconfig('admin-kubeconfig', server, {
    cn: 'nox-node-admin',
    o: ['system:masters'],
  });
  const saKey = join(dir, 'pki', 'sa.key');
  const saPub = join(dir, 'pki', 'sa.pub');
  const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(saKey, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeFileSync(saPub, pair.publicKey.export({ type: 'spki', format: 'pem' }));

  const etcd = startInNetns(
    'etcd',
    'etcd',
    [
      '--name=default',
      `--data-dir=${join(dir, 'etcd')}`,
      '--listen-client-urls=http://127.0.0.1:2379',
      '--advertise-client-urls=http://127.0.0.1:2379',
      '--listen-peer-urls=http://127.0.0.1:2380',
      '--initial-advertise-peer-urls=http://127.0.0.1:2380',
      '--initial-cluster=default=http://127.0.0.1:2380',
      '--initial-cluster-state=new',
      '--unsafe-no-fsync',
      '--log-level=warn',
    ],
    dir,
  );
  services.push(etcd);

  const apiserver = startInNetns(
    'kube-apiserver',
    'kube-apiserver',
    [
      '--etcd-servers=http://127.0.0.1:2379',
      `--bind-address=${NETWORK.nodeIp}`,
      `--advertise-address=${NETWORK.nodeIp}`,
      `--secure-port=${NETWORK.apiServerPort}`,
      `--tls-cert-file=${serving.cert}`,
      `--tls-private-key-file=${serving.key}`,
      `--client-ca-file=${pki.caCert}`,
      `--kubelet-client-certificate=${kubeletClient.cert}`,
      `--kubelet-client-key=${kubeletClient.key}`,
      // The node's name does not resolve anywhere; its InternalIP does.
      '--kubelet-preferred-address-types=InternalIP',
      `--service-account-issuer=https://kubernetes.default.svc.${NETWORK.clusterDomain}`,
      `--service-account-key-file=${saPub}`,
      `--service-account-signing-key-file=${saKey}`,
      `--service-cluster-ip-range=${NETWORK.serviceCidr}`,
      '--service-node-port-range=30000-32767',
      '--authorization-mode=Node,RBAC',
      '--enable-admission-plugins=NodeRestriction',
      '--anonymous-auth=false',
      '--allow-privileged=true',
      '--profiling=false',
      '--v=1',
    ],
    dir,
  );
  services.push(apiserver);
  await waitUntil(
    'kube-apiserver /readyz',
    async () => (await api(creds, 'GET', '/readyz')).status === 200,
    90_000,
    apiserver,
  );

  const kcmKubeconfig = await pki.kubeconfig('kube-controller-manager', server, {
    cn: 'system:kube-controller-manager',
  });
  const kcm = startInNetns(
    'kube-controller-manager',
    'kube-controller-manager',
    [
      `--kubeconfig=${kcmKubeconfig}`,
      `--authentication-kubeconfig=${kcmKubeconfig}`,
      `--authorization-kubeconfig=${kcmKubeconfig}`,
      '--bind-address=127.0.0.1',
      '--secure-port=10257',
      `--cert-dir=${join(dir, 'pki', 'kcm')}`,
      '--leader-elect=false',
      '--use-service-account-credentials=true',
      `--service-account-private-key-file=${saKey}`,
      `--root-ca-file=${pki.caCert}`,
      `--cluster-signing-cert-file=${pki.caCert}`,
      `--cluster-signing-key-file=${pki.caKey}`,
      `--service-cluster-ip-range=${NETWORK.serviceCidr}`,
      `--cluster-cidr=${NETWORK.podCidr}`,
      '--allocate-node-cidrs=false',
      // Tests want to see reconciliation and pod replacement quickly.
      '--concurrent-gc-syncs=5',
      '--v=1',
    ],
    dir,
  );
  services.push(kcm);

  const schedulerKubeconfig = await pki.kubeconfig('kube-scheduler', server, { cn: 'system:kube-scheduler' });
  const scheduler = startInNetns(
    'kube-scheduler',
    'kube-scheduler',
    [
      `--kubeconfig=${schedulerKubeconfig}`,
      `--authentication-kubeconfig=${schedulerKubeconfig}`,
      `--authorization-kubeconfig=${schedulerKubeconfig}`,
      '--bind-address=127.0.0.1',
      '--secure-port=10259',
      '--leader-elect=false',
      '--v=1',
    ],
    dir,
  );
  services.push(scheduler);

  // The service-account controller has run: pods can be admitted in `default`.
  await waitUntil(
    'serviceaccount default/default',
    async () =>
      (await api(creds, 'GET', '/api/v1/namespaces/default/serviceaccounts/default')).status === 200,
    60_000,
    kcm,
  );
  return { services, creds, kubeconfigPath };
}
