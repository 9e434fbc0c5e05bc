import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';

const exec = promisify(execFile);

export interface Issued {
  cert: string;
  key: string;
}

/** A small PKI made with the openssl CLI (node:crypto cannot issue X.509 certificates). */
export class Pki {
  /** `ca` names the CA's files (`<ca>.crt`, `<ca>.key`) and is its common name's suffix. */
  constructor(
    private readonly dir: string,
    private readonly ca = 'ca',
  ) {}

  get caCert(): string {
    return join(this.dir, `${this.ca}.crt`);
  }
  get caKey(): string {
    return join(this.dir, `${this.ca}.key`);
  }

  async initCa(): Promise<void> {
    const cnf = join(this.dir, `${this.ca}.cnf`);
    writeFileSync(
      cnf,
      [
        '[req]',
        'distinguished_name = dn',
        'prompt = no',
        'x509_extensions = v3_ca',
        '[dn]',
        `CN = nox-test-${this.ca}`,
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

  /**
   * Issues `<name>.crt`/`<name>.key`; returns their paths. `validity` sets an exact period
   * (e.g. one already over), through `openssl ca`, which can date a certificate in the past.
   */
  async issue(
    name: string,
    subject: { cn: string; o?: string[] },
    usage: 'client' | 'server',
    sans: string[] = [],
    validity?: { notBefore: Date; notAfter: Date },
  ): Promise<Issued> {
    const key = join(this.dir, `${name}.key`);
    const cert = join(this.dir, `${name}.crt`);
    const csr = join(this.dir, `${name}.csr`);
    const cnf = join(this.dir, `${name}.cnf`);
    const esc = (s: string) => s.replace(/[\\/,=+<>#;"]/g, (c) => `\\${c}`);
    const subj = `${(subject.o ?? []).map((o) => `/O=${esc(o)}`).join('')}/CN=${esc(subject.cn)}`;
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
    await exec('openssl', [
      'req',
      '-new',
      '-nodes',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-keyout',
      key,
      '-out',
      csr,
      '-subj',
      subj,
      '-config',
      cnf,
    ]);
    if (validity) {
      const asn1 = (d: Date) => `${d.toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
      await exec('openssl', [
        'ca',
        '-batch',
        '-config',
        this.#caDatabase(),
        '-preserveDN',
        '-notext',
        '-startdate',
        asn1(validity.notBefore),
        '-enddate',
        asn1(validity.notAfter),
        '-in',
        csr,
        '-extfile',
        cnf,
        '-extensions',
        'v3',
        '-out',
        cert,
      ]);
      return { cert, key };
    }
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

  /** Marks a certificate this CA issued as revoked (keyCompromise); see crl(). */
  async revoke(certPath: string): Promise<void> {
    await exec('openssl', [
      'ca',
      '-config',
      this.#caDatabase(),
      '-revoke',
      certPath,
      '-crl_reason',
      'keyCompromise',
    ]);
  }

  /** Writes `<ca>.crl`, the CA's current CRL (PEM), valid for a day; returns its path. */
  async crl(): Promise<string> {
    const out = join(this.dir, `${this.ca}.crl`);
    await exec('openssl', ['ca', '-config', this.#caDatabase(), '-gencrl', '-crldays', '1', '-out', out]);
    return out;
  }

  /** The CA's `openssl ca` configuration and database (index, serial), made on first use. */
  #caDatabase(): string {
    const cnf = join(this.dir, `${this.ca}-db.cnf`);
    if (existsSync(cnf)) return cnf;
    const index = join(this.dir, `${this.ca}-index.txt`);
    writeFileSync(index, '');
    writeFileSync(join(this.dir, `${this.ca}-serial`), `${randomBytes(16).toString('hex').toUpperCase()}\n`);
    writeFileSync(join(this.dir, `${this.ca}-crlnumber`), '01\n');
    writeFileSync(
      cnf,
      [
        '[ca]',
        'default_ca = this_ca',
        '[this_ca]',
        `database = ${index}`,
        `new_certs_dir = ${this.dir}`,
        `serial = ${join(this.dir, `${this.ca}-serial`)}`,
        `crlnumber = ${join(this.dir, `${this.ca}-crlnumber`)}`,
        `certificate = ${this.caCert}`,
        `private_key = ${this.caKey}`,
        'default_md = sha256',
        'default_crl_days = 1',
        'unique_subject = no',
        'email_in_dn = no',
        'policy = any_name',
        '[any_name]',
        'organizationName = optional',
        'commonName = supplied',
        '',
      ].join('\n'),
    );
    return cnf;
  }
}

/** A kubeconfig with the certificates embedded, for one cluster and one client-certificate user. */
export function kubeconfigYaml(
  server: string,
  caPem: string,
  user: string,
  certPem: string,
  keyPem: string,
  cluster = 'nox-test',
): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: cluster, cluster: { server, 'certificate-authority-data': b64(caPem) } }],
    users: [
      { name: user, user: { 'client-certificate-data': b64(certPem), 'client-key-data': b64(keyPem) } },
    ],
    contexts: [{ name: cluster, context: { cluster, user } }],
    'current-context': cluster,
    preferences: {},
  });
}
