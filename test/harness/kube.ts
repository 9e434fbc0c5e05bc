import { generateKeyPairSync, randomBytes, randomInt } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { connect } from 'node:net';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { kubeconfigYaml, Pki } from './pki.js';
import { freePorts } from './ports.js';
import { type Service, scratchDir, start, waitUntil } from './process.js';
import { tool } from './tools.js';

/**
 * A real Kubernetes control plane for integration tests: etcd, kube-apiserver and, on
 * request, kube-controller-manager, all on loopback with free ports and a scratch directory.
 * There is no scheduler and no kubelet: Pods are created but stay Pending.
 *
 * Authentication is by client certificates signed by a CA made for this instance; the test
 * admin is in `system:masters`, the controller-manager is `system:kube-controller-manager`
 * and runs its controllers with service-account credentials. Authorization is RBAC, so an
 * identity without bindings gets 403.
 */
export interface KubeOptions {
  /** Also run kube-controller-manager (Deployments → ReplicaSets → Pods, GC, namespaces, ...). */
  controllerManager?: boolean;
  /** Extra kube-apiserver flags (`--name=value`), appended after the defaults. */
  apiServerArgs?: string[];
}

export interface Kube {
  /** A kubeconfig for the admin (`system:masters`), with the certificates embedded. */
  readonly kubeconfigPath: string;
  /** https://127.0.0.1:<port> */
  readonly server: string;
  /** PEM of the CA that signed the serving and client certificates. */
  readonly caPem: string;
  /** The scratch directory holding certificates, configs, logs and the etcd data. */
  readonly dir: string;
  readonly etcdUrl: string;
  /** A fresh KubeConfig loaded from `kubeconfigPath`. */
  kubeConfig(): KubeConfig;
  /**
   * A kubeconfig file for another identity (client certificate with CN=user, O=groups),
   * for RBAC tests; no permissions beyond `system:authenticated` unless the test binds some.
   */
  kubeconfigFor(user: string, groups?: string[]): Promise<string>;
  /**
   * Stops kube-apiserver (SIGTERM) and starts it again on the same port and etcd; `whileDown`
   * runs in between (e.g. to change etcd behind its back), so the outage lasts as long as it.
   */
  restartApiServer(whileDown?: () => Promise<void>): Promise<void>;
  /** Stops everything (controller-manager, apiserver, etcd) and deletes the etcd data. */
  stop(): Promise<void>;
}

/**
 * ClusterIPs are loopback addresses, so that the kube-proxy stand-in can listen on them; each
 * control plane gets a /24 of its own (127.96–127.254.x.0), so that two test files running at
 * once do not hand out the same ClusterIP. Pods use 127.0.x.y (the kubelet stand-in).
 */
function serviceCidr(): { cidr: string; first: string } {
  const b = 96 + randomInt(159);
  const c = randomInt(256);
  return { cidr: `127.${b}.${c}.0/24`, first: `127.${b}.${c}.1` };
}
const ISSUER = 'https://kubernetes.default.svc.cluster.local';

/** What the controller-manager runs: the workload, lifecycle and identity controllers. */
const CONTROLLERS = [
  'serviceaccount-token-controller',
  'serviceaccount-controller',
  'root-ca-certificate-publisher-controller',
  'namespace-controller',
  'garbage-collector-controller',
  'deployment-controller',
  'replicaset-controller',
  'statefulset-controller',
  'daemonset-controller',
  'job-controller',
  'cronjob-controller',
  'ttl-after-finished-controller',
  'disruption-controller',
  'endpoints-controller',
  'endpointslice-controller',
  'endpointslice-mirroring-controller',
  'resourcequota-controller',
  'clusterrole-aggregation-controller',
  'pod-garbage-collector-controller',
  'service-cidr-controller',
];

interface Tls {
  ca: string;
  cert: string;
  key: string;
}

interface HttpResult {
  status: number;
  body: string;
}

function httpsGet(
  url: string,
  tls: Partial<Tls> & { insecure?: boolean },
  timeoutMs = 2000,
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'GET',
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
        rejectUnauthorized: !tls.insecure,
        timeout: timeoutMs,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

async function httpGet(url: string): Promise<HttpResult> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return { status: res.status, body: await res.text() };
}

export async function startKube(opts: KubeOptions = {}): Promise<Kube> {
  const etcdBin = tool('etcd');
  const apiserverBin = tool('kube-apiserver');
  const kcmBin = opts.controllerManager ? tool('kube-controller-manager') : undefined;

  const dir = scratchDir('kube');
  const services = serviceCidr();
  const [etcdClientPort, etcdPeerPort, apiPort, kcmPort] = (await freePorts(4)) as [
    number,
    number,
    number,
    number,
  ];
  const id = dir.slice(dir.lastIndexOf('/') + 1);
  const log = (what: string) => join(dir, `${what}.log`);

  // Certificates and the service-account signing key.
  const pki = new Pki(dir);
  // The aggregation layer's CA: the apiserver proves requests it proxies with it, and every
  // delegating component (the controller-manager, later extension apiservers) trusts it.
  const frontProxy = new Pki(dir, 'front-proxy-ca');
  await Promise.all([pki.initCa(), frontProxy.initCa()]);
  const [proxyClient, serving, admin] = await Promise.all([
    frontProxy.issue('front-proxy-client', { cn: 'front-proxy-client' }, 'client'),
    pki.issue('apiserver', { cn: 'kube-apiserver' }, 'server', [
      'IP:127.0.0.1',
      `IP:${services.first}`,
      'DNS:localhost',
      'DNS:kubernetes',
      'DNS:kubernetes.default',
      'DNS:kubernetes.default.svc',
      'DNS:kubernetes.default.svc.cluster.local',
    ]),
    pki.issue('admin', { cn: 'nox-test-admin', o: ['system:masters'] }, 'client'),
  ]);
  const saKey = join(dir, 'sa.key');
  const saPub = join(dir, 'sa.pub');
  const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(saKey, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeFileSync(saPub, pair.publicKey.export({ type: 'spki', format: 'pem' }));

  const caPem = readFileSync(pki.caCert, 'utf8');
  const adminTls: Tls = {
    ca: caPem,
    cert: readFileSync(admin.cert, 'utf8'),
    key: readFileSync(admin.key, 'utf8'),
  };
  const server = `https://127.0.0.1:${apiPort}`;
  const kubeconfigPath = join(dir, 'admin.kubeconfig');
  writeFileSync(kubeconfigPath, kubeconfigYaml(server, caPem, 'nox-test-admin', adminTls.cert, adminTls.key));

  const etcdUrl = `http://127.0.0.1:${etcdClientPort}`;
  const etcdDataDir = join(dir, 'etcd');
  let etcd: Service | undefined;
  let apiserver: Service | undefined;
  let controllerManager: Service | undefined;

  const apiArgs = [
    `--etcd-servers=${etcdUrl}`,
    '--bind-address=127.0.0.1',
    '--advertise-address=127.0.0.1',
    `--secure-port=${apiPort}`,
    `--tls-cert-file=${serving.cert}`,
    `--tls-private-key-file=${serving.key}`,
    `--client-ca-file=${pki.caCert}`,
    `--requestheader-client-ca-file=${frontProxy.caCert}`,
    '--requestheader-allowed-names=front-proxy-client',
    '--requestheader-username-headers=X-Remote-User',
    '--requestheader-group-headers=X-Remote-Group',
    '--requestheader-extra-headers-prefix=X-Remote-Extra-',
    `--proxy-client-cert-file=${proxyClient.cert}`,
    `--proxy-client-key-file=${proxyClient.key}`,
    `--service-account-issuer=${ISSUER}`,
    `--service-account-key-file=${saPub}`,
    `--service-account-signing-key-file=${saKey}`,
    `--service-cluster-ip-range=${services.cidr}`,
    '--authorization-mode=RBAC',
    '--anonymous-auth=false',
    // The default admission plugins (NamespaceLifecycle, ServiceAccount, LimitRanger,
    // PodSecurity, ResourceQuota, the webhook and policy plugins, ...) all work without a
    // kubelet or a cloud, so they stay as they are.
    // The endpoints of the `kubernetes` Service cannot hold a loopback address.
    '--endpoint-reconciler-type=none',
    '--allow-privileged=true',
    '--profiling=false',
    // No kubelets, so no kubelet TLS; keep logs readable.
    '--v=1',
    ...(opts.apiServerArgs ?? []),
  ];

  const startApiServer = async (): Promise<void> => {
    const svc = start(`kube-apiserver-${id}`, apiserverBin, apiArgs, { logFile: log('kube-apiserver') });
    apiserver = svc;
    await waitUntil(
      'kube-apiserver /readyz',
      async () => (await httpsGet(`${server}/readyz`, adminTls)).status === 200,
      60_000,
      svc,
    );
  };

  const stop = async (): Promise<void> => {
    for (const svc of [controllerManager, apiserver, etcd]) await svc?.stop(10_000);
    rmSync(etcdDataDir, { recursive: true, force: true });
  };

  try {
    etcd = start(
      `etcd-${id}`,
      etcdBin,
      [
        '--name=default',
        `--data-dir=${etcdDataDir}`,
        `--listen-client-urls=${etcdUrl}`,
        `--advertise-client-urls=${etcdUrl}`,
        `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-cluster=default=http://127.0.0.1:${etcdPeerPort}`,
        '--initial-cluster-state=new',
        '--unsafe-no-fsync',
        '--log-level=warn',
      ],
      { logFile: log('etcd') },
    );
    await waitUntil(
      'etcd /health',
      async () => {
        const r = await httpGet(`${etcdUrl}/health`);
        return r.status === 200 && r.body.includes('"health":"true"');
      },
      30_000,
      etcd,
    );

    await startApiServer();
    // The bootstrap controller creates `default` shortly after /readyz.
    await waitUntil(
      'namespace default',
      async () => (await httpsGet(`${server}/api/v1/namespaces/default`, adminTls)).status === 200,
      30_000,
      apiserver,
    );

    if (kcmBin) {
      const kcm = await pki.issue(
        'kube-controller-manager',
        { cn: 'system:kube-controller-manager' },
        'client',
      );
      const kcmKubeconfig = join(dir, 'kube-controller-manager.kubeconfig');
      writeFileSync(
        kcmKubeconfig,
        kubeconfigYaml(
          server,
          caPem,
          'system:kube-controller-manager',
          readFileSync(kcm.cert, 'utf8'),
          readFileSync(kcm.key, 'utf8'),
        ),
      );
      const svc = start(
        `kube-controller-manager-${id}`,
        kcmBin,
        [
          `--kubeconfig=${kcmKubeconfig}`,
          `--authentication-kubeconfig=${kcmKubeconfig}`,
          `--authorization-kubeconfig=${kcmKubeconfig}`,
          '--bind-address=127.0.0.1',
          `--secure-port=${kcmPort}`,
          `--cert-dir=${join(dir, 'kcm-certs')}`,
          '--leader-elect=false',
          '--use-service-account-credentials=true',
          `--service-account-private-key-file=${saKey}`,
          `--root-ca-file=${pki.caCert}`,
          `--controllers=${CONTROLLERS.join(',')}`,
          // Tests want to see reconciliation quickly.
          '--concurrent-gc-syncs=5',
          '--v=1',
        ],
        { logFile: log('kube-controller-manager') },
      );
      controllerManager = svc;
      await waitUntil(
        'kube-controller-manager /healthz',
        async () =>
          (await httpsGet(`https://127.0.0.1:${kcmPort}/healthz`, { insecure: true })).status === 200,
        60_000,
        svc,
      );
      // The service-account controller has run: Pods can be admitted in `default`.
      await waitUntil(
        'serviceaccount default/default',
        async () =>
          (await httpsGet(`${server}/api/v1/namespaces/default/serviceaccounts/default`, adminTls)).status ===
          200,
        30_000,
        svc,
      );
    }
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    kubeconfigPath,
    server,
    caPem,
    dir,
    etcdUrl,
    kubeConfig() {
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfigPath);
      return kc;
    },
    async kubeconfigFor(user: string, groups: string[] = []) {
      const safe = user.replace(/[^A-Za-z0-9_.-]/g, '_');
      const issued = await pki.issue(
        `user-${safe}-${randomBytes(3).toString('hex')}`,
        { cn: user, o: groups },
        'client',
      );
      const path = join(dir, `user-${safe}.kubeconfig`);
      writeFileSync(
        path,
        kubeconfigYaml(
          server,
          caPem,
          user,
          readFileSync(issued.cert, 'utf8'),
          readFileSync(issued.key, 'utf8'),
        ),
      );
      return path;
    },
    async restartApiServer(whileDown) {
      if (apiserver) await apiserver.stop(10_000);
      try {
        await whileDown?.();
      } finally {
        await startApiServer();
      }
    },
    stop,
  };
}

/** True when nothing accepts connections on the API server's port (the old process has closed it). */
export function apiServerRefuses(kube: Pick<Kube, 'server'>): Promise<boolean> {
  const { hostname, port } = new URL(kube.server);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port) });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

/** etcd's JSON gateway, for changing what the API server stores behind its back (keys and values in base64). */
export async function etcdRequest(
  kube: Pick<Kube, 'etcdUrl'>,
  op: string,
  body: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const res = await fetch(`${kube.etcdUrl}/v3/${op}`, { method: 'POST', body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`etcd ${op}: ${res.status} ${await res.text()}`);
  return (await res.json()) as Record<string, unknown>;
}

export const base64 = (s: string): string => Buffer.from(s).toString('base64');
