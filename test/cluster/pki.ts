import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';

const exec = promisify(execFile);

export interface Issued {
  cert: string;
  key: string;
}

/**
 * The node's certificates, made with the openssl CLI (node:crypto cannot issue X.509): one CA
 * signs the apiserver's and kubelet's serving certificates and every component's client
 * certificate (CN = user, O = groups), as kubeadm's single cluster CA does.
 */
export class NodePki {
  readonly caCert: string;
  readonly caKey: string;

  constructor(private readonly dir: string) {
    this.caCert = join(dir, 'ca.crt');
    this.caKey = join(dir, 'ca.key');
  }

  get caPem(): string {
    return readFileSync(this.caCert, 'utf8');
  }

  async initCa(): Promise<void> {
    const cnf = join(this.dir, 'ca.cnf');
    writeFileSync(
      cnf,
      [
        '[req]',
        'distinguished_name = dn',
        'prompt = no',
        'x509_extensions = v3_ca',
        '[dn]',
        'CN = nox-node-ca',
        '[v3_ca]',
        'basicConstraints = critical,CA:TRUE',
        'keyUsage = critical,keyCertSign,cRLSign,digitalSignature',
        'subjectKeyIdentifier = hash',
        '',
      ].join('\n'),
    );
    await exec('openssl', [
      'req',
      '-x509',
      '-new',
      '-nodes',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-keyout',
      this.caKey,
      '-out',
      this.caCert,
      '-days',
      '3650',
      '-config',
      cnf,
    ]);
  }

  /** Issues `<name>.crt`/`<name>.key` for a client (CN/O) or a server (SANs like `IP:1.2.3.4`). */
  async issue(
    name: string,
    subject: { cn: string; o?: string[] },
    usage: 'client' | 'server',
    sans: string[] = [],
  ): Promise<Issued> {
    const key = join(this.dir, `${name}.key`);
    const cert = join(this.dir, `${name}.crt`);
    const csr = join(this.dir, `${name}.csr`);
    const cnf = join(this.dir, `${name}.cnf`);
    const subj = `${(subject.o ?? []).map((o) => `/O=${o}`).join('')}/CN=${subject.cn}`;
    writeFileSync(
      cnf,
      [
        '[req]',
        'distinguished_name = dn',
        '[dn]',
        '[v3]',
        'basicConstraints = critical,CA:FALSE',
        'keyUsage = critical,digitalSignature,keyEncipherment',
        `extendedKeyUsage = ${usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
        'authorityKeyIdentifier = keyid',
        ...(sans.length ? [`subjectAltName = ${sans.join(',')}`] : []),
        '',
      ].join('\n'),
    );
    const keyArgs = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
    await exec('openssl', [
      'req',
      '-new',
      '-nodes',
      ...keyArgs,
      '-keyout',
      key,
      '-out',
      csr,
      '-subj',
      subj,
      '-config',
      cnf,
    ]);
    await exec('openssl', [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      this.caCert,
      '-CAkey',
      this.caKey,
      '-set_serial',
      `0x${randomBytes(16).toString('hex')}`,
      '-days',
      '365',
      '-extfile',
      cnf,
      '-extensions',
      'v3',
      '-out',
      cert,
    ]);
    return { cert, key };
  }

  /** Issues a client certificate and writes a kubeconfig (certificates embedded) for it. */
  async kubeconfig(name: string, server: string, subject: { cn: string; o?: string[] }): Promise<string> {
    const issued = await this.issue(name, subject, 'client');
    const path = join(this.dir, `${name}.kubeconfig`);
    writeFileSync(
      path,
      kubeconfigYaml(
        server,
        this.caPem,
        subject.cn,
        readFileSync(issued.cert, 'utf8'),
        readFileSync(issued.key, 'utf8'),
      ),
    );
    return path;
  }
}

export function kubeconfigYaml(
  server: string,
  caPem: string,
  user: string,
  certPem: string,
  keyPem: string,
): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'nox-node', cluster: { server, 'certificate-authority-data': b64(caPem) } }],
    users: [
      { name: user, user: { 'client-certificate-data': b64(certPem), 'client-key-data': b64(keyPem) } },
    ],
    contexts: [{ name: 'nox-node', context: { cluster: 'nox-node', user } }],
    'current-context': 'nox-node',
    preferences: {},
  });
}
