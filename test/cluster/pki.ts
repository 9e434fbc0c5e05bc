import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { kubeconfigYaml, Pki } from '../harness/pki.js';

/**
 * The node's certificates: one CA (the harness's openssl PKI) signs the apiserver's and
 * kubelet's serving certificates and every component's client certificate (CN = user,
 * O = groups), as kubeadm's single cluster CA does.
 */
export class NodePki extends Pki {
  constructor(private readonly pkiDir: string) {
    super(pkiDir);
  }

  get caPem(): string {
    return readFileSync(this.caCert, 'utf8');
  }

  /** Issues a client certificate and writes a kubeconfig (certificates embedded) for it. */
  async kubeconfig(name: string, server: string, subject: { cn: string; o?: string[] }): Promise<string> {
    const issued = await this.issue(name, subject, 'client');
    const path = join(this.pkiDir, `${name}.kubeconfig`);
    writeFileSync(
      path,
      kubeconfigYaml(
        server,
        this.caPem,
        subject.cn,
        readFileSync(issued.cert, 'utf8'),
        readFileSync(issued.key, 'utf8'),
        'nox-node',
      ),
    );
    return path;
  }
}
