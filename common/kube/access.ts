import { readFileSync } from 'node:fs';
import type https from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';

/**
 * What KubeClient needs of a kubeconfig: the server, and the TLS material and credentials of
 * each request. @kubernetes/client-node's KubeConfig provides it, at about 75 MB of resident
 * memory for the library; `loadKubeAccess` reads the common cases itself (in-cluster
 * ServiceAccount, a kubeconfig with a token or a client certificate) and leaves the rest
 * (exec plugins, auth providers) to client-node, loaded only then.
 */
export interface KubeAccess {
  getCurrentCluster(): { readonly server: string } | null;
  applyToHTTPSOptions(opts: https.RequestOptions): Promise<void>;
}

const inCluster = '/var/run/secrets/kubernetes.io/serviceaccount';

interface NamedCluster {
  name: string;
  cluster: {
    server: string;
    'certificate-authority-data'?: string;
    'certificate-authority'?: string;
    'insecure-skip-tls-verify'?: boolean;
    'tls-server-name'?: string;
  };
}
interface NamedUser {
  name: string;
  user?: {
    token?: string;
    tokenFile?: string;
    'client-certificate-data'?: string;
    'client-key-data'?: string;
    'client-certificate'?: string;
    'client-key'?: string;
    exec?: unknown;
    'auth-provider'?: unknown;
    username?: string;
  };
}
interface KubeconfigFile {
  'current-context'?: string;
  contexts?: { name: string; context: { cluster: string; user: string } }[];
  clusters?: NamedCluster[];
  users?: NamedUser[];
}

/** The kubeconfig at `path`, else KUBECONFIG, ~/.kube/config, else the in-cluster ServiceAccount. */
export async function loadKubeAccess(path?: string): Promise<KubeAccess> {
  const file = path || process.env.KUBECONFIG?.split(':')[0] || join(homedir(), '.kube', 'config');
  let text: string | undefined;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (path) throw new Error(`kubeconfig ${path}: ${(e as Error).message}`);
  }
  if (text === undefined) {
    if (!process.env.KUBERNETES_SERVICE_HOST)
      throw new Error(`no kubeconfig at ${file}, and not in a cluster`);
    return inClusterAccess();
  }
  return (await fromKubeconfig(parse(text) as KubeconfigFile, file)) ?? clientNode(file);
}

function inClusterAccess(): KubeAccess {
  const host = process.env.KUBERNETES_SERVICE_HOST!;
  const port = process.env.KUBERNETES_SERVICE_PORT ?? '443';
  const server = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const ca = readFileSync(join(inCluster, 'ca.crt'));
  return {
    getCurrentCluster: () => ({ server }),
    async applyToHTTPSOptions(opts) {
      opts.ca = ca;
      // The projected token is rotated by the kubelet: read it for each request.
      const token = readFileSync(join(inCluster, 'token'), 'utf8').trim();
      opts.headers = { ...opts.headers, authorization: `Bearer ${token}` };
    },
  };
}

/** undefined when the user authenticates in a way only client-node knows (exec, auth provider). */
async function fromKubeconfig(k: KubeconfigFile, file: string): Promise<KubeAccess | undefined> {
  const ctx = k.contexts?.find((c) => c.name === k['current-context'])?.context;
  if (!ctx) throw new Error(`kubeconfig ${file}: no current context`);
  const cluster = k.clusters?.find((c) => c.name === ctx.cluster)?.cluster;
  if (!cluster?.server) throw new Error(`kubeconfig ${file}: no cluster ${ctx.cluster}`);
  const user = k.users?.find((u) => u.name === ctx.user)?.user ?? {};
  if (user.exec || user['auth-provider']) return undefined;
  const b64 = (s: string | undefined) => (s ? Buffer.from(s, 'base64') : undefined);
  const ca = b64(cluster['certificate-authority-data']) ?? readIf(cluster['certificate-authority']);
  const cert = b64(user['client-certificate-data']) ?? readIf(user['client-certificate']);
  const key = b64(user['client-key-data']) ?? readIf(user['client-key']);
  return {
    getCurrentCluster: () => ({ server: cluster.server }),
    async applyToHTTPSOptions(opts) {
      if (ca) opts.ca = ca;
      if (cert) opts.cert = cert;
      if (key) opts.key = key;
      if (cluster['insecure-skip-tls-verify']) opts.rejectUnauthorized = false;
      if (cluster['tls-server-name']) opts.servername = cluster['tls-server-name'];
      const token = user.token ?? (user.tokenFile ? readFileSync(user.tokenFile, 'utf8').trim() : undefined);
      if (token) opts.headers = { ...opts.headers, authorization: `Bearer ${token}` };
    },
  };
}

function readIf(path: string | undefined): Buffer | undefined {
  return path ? readFileSync(path) : undefined;
}

async function clientNode(file: string): Promise<KubeAccess> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  kc.loadFromFile(file);
  return kc;
}
