import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import { createLogger, type Logger } from '../../common/logger.js';
import { sidecarKinds } from '../../sidecar/config/kinds.js';
import type { ConfigSource } from '../../sidecar/config/source.js';
import { NoSecrets } from '../../sidecar/secrets/noSecrets.js';
import type { SecretStore } from '../../sidecar/secrets/secretStore.js';
import { loadSettings } from '../../sidecar/settings/settings.js';
import type { Kube } from '../../sidecar/wiring/kube.js';
import { quotaStoreFor } from '../../sidecar/wiring/quota.js';
import { redisTargetsFor } from '../../sidecar/wiring/redis.js';
import { CliError } from '../adminClient.js';
import { Explainer, type Explanation } from '../explain/explainer.js';
import { BadRequestSpec, parseHeaderFlags, type RequestSpec } from '../explain/request.js';

export const explainUsage = `kubectl nox explain: what Nox decides for a request, and why, without sending it

  kubectl nox explain --url https://api.example.com/api/x [-X POST] [-H 'Name: value']...
                      [--token JWT] [--source-ip 10.1.2.3] [--client-cert cert.pem]
  kubectl nox explain --requests requests.jsonl|-    (one request per line: {"method","url"|"host"+"path","headers","token","sourceIp","id"})

Policies: the cluster's (the kubeconfig's; -n NAMESPACE[,..], default all namespaces), or
-f FILE_OR_DIR (the manifests a standalone sidecar reads) with --secrets-dir DIR.
--redis HOST:PORT[,..] [--redis-cluster] [--redis-password-file F]: read the quota counters
(nothing is charged). -o json: one JSON object per request.`;

export async function explainCommand(argv: readonly string[], out: NodeJS.WritableStream): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      url: { type: 'string' },
      host: { type: 'string' },
      path: { type: 'string' },
      request: { type: 'string', short: 'X' },
      header: { type: 'string', short: 'H', multiple: true },
      token: { type: 'string' },
      'source-ip': { type: 'string' },
      'client-cert': { type: 'string' },
      requests: { type: 'string' },
      filename: { type: 'string', short: 'f' },
      'secrets-dir': { type: 'string' },
      kubeconfig: { type: 'string' },
      namespace: { type: 'string', short: 'n' },
      redis: { type: 'string' },
      'redis-cluster': { type: 'boolean' },
      'redis-password-file': { type: 'string' },
      output: { type: 'string', short: 'o', default: 'text' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    out.write(`${explainUsage}\n`);
    return 0;
  }
  if (values.output !== 'text' && values.output !== 'json') throw new CliError('-o: text or json', 2);
  if (!values.requests && !values.url && !values.host)
    throw new CliError('give the request (--url, or --host and --path) or --requests FILE', 2);
  // Logs go to stderr: stdout is the explanation, which -o json makes machine-read.
  const log = createLogger('kubectl-nox', { level: process.env.NOX_LOG_LEVEL ?? 'fatal', destination: 2 });
  // Usage errors first: nothing is started for a command that cannot run.
  let headers: Record<string, string>;
  try {
    headers = parseHeaderFlags(values.header ?? []);
  } catch (e) {
    if (e instanceof BadRequestSpec) throw new CliError(e.message, 2);
    throw e;
  }
  const parts = await partsFor(values, log);
  let explainer: Explainer;
  try {
    explainer = await Explainer.open(parts);
  } catch (e) {
    // What partsFor started (Secret informers, Redis) would keep the process alive.
    await parts.secrets.stop().catch(() => undefined);
    await parts.quota?.close().catch(() => undefined);
    throw e;
  }
  try {
    const print = (e: Explanation) =>
      out.write(values.output === 'json' ? `${JSON.stringify(e)}\n` : render(e));
    if (values.requests) {
      const lines = createInterface({
        // "-": standard input, each answer printed as its request arrives (a pipe from a log).
        input: values.requests === '-' ? process.stdin : createReadStream(values.requests),
        crlfDelay: Number.POSITIVE_INFINITY,
      });
      let n = 0;
      for await (const line of lines) {
        n++;
        if (!line.trim()) continue;
        let spec: RequestSpec;
        try {
          spec = JSON.parse(line) as RequestSpec;
        } catch {
          throw new CliError(`${values.requests}:${n}: not a JSON object`, 2);
        }
        if (typeof spec !== 'object' || spec === null || Array.isArray(spec))
          throw new CliError(`${values.requests}:${n}: not a JSON object`, 2);
        print(await explainOne(explainer, spec, `${values.requests}:${n}`));
      }
    } else {
      print(
        await explainOne(
          explainer,
          {
            ...(values.url ? { url: values.url } : {}),
            ...(values.host ? { host: values.host } : {}),
            ...(values.path ? { path: values.path } : {}),
            ...(values.request ? { method: values.request } : {}),
            headers,
            ...(values.token ? { token: values.token } : {}),
            ...(values['source-ip'] ? { sourceIp: values['source-ip'] } : {}),
            ...(values['client-cert'] ? { clientCert: `@${values['client-cert']}` } : {}),
          },
          'the request',
        ),
      );
    }
  } finally {
    await explainer.close();
  }
  return 0;
}

async function explainOne(explainer: Explainer, spec: RequestSpec, where: string): Promise<Explanation> {
  try {
    return await explainer.explain(spec);
  } catch (e) {
    if (e instanceof BadRequestSpec) throw new CliError(`${where}: ${e.message}`, 2);
    throw e;
  }
}

type Flags = {
  filename?: string | undefined;
  'secrets-dir'?: string | undefined;
  kubeconfig?: string | undefined;
  namespace?: string | undefined;
  redis?: string | undefined;
  'redis-cluster'?: boolean | undefined;
  'redis-password-file'?: string | undefined;
};

/** The policy source, Secrets, API server and quota store explain reads, from the flags. */
async function partsFor(values: Flags, log: Logger): Promise<Parameters<typeof Explainer.open>[0]> {
  const registry = new Registry();
  const namespaces = (values.namespace ?? '')
    .split(',')
    .map((n) => n.trim())
    .filter(Boolean);
  let source: ConfigSource;
  let secrets: SecretStore = new NoSecrets();
  let kube: Kube | undefined;
  if (values.filename) {
    const { FileSource } = await import('../../sidecar/config/fileSource.js');
    source = new FileSource({ path: values.filename, kinds: sidecarKinds, log, registry, rescanMs: 0 });
    if (values['secrets-dir']) {
      const { DirSecretStore } = await import('../../sidecar/secrets/dirSecretStore.js');
      secrets = new DirSecretStore({ dir: values['secrets-dir'], log });
    }
  } else {
    const [{ KubeClient }, { loadKubeConfig }, { KubeSource }, { KubeSecretStore }] = await Promise.all([
      import('../../common/kube/client.js'),
      import('../../common/kube/config.js'),
      import('../../sidecar/config/kubeSource.js'),
      import('../../sidecar/secrets/kubeSecretStore.js'),
    ]);
    const config = await loadKubeConfig(values.kubeconfig);
    const client = new KubeClient(config, { fieldManager: 'kubectl-nox' });
    kube = { config, client, namespaces };
    source = new KubeSource({
      client,
      kinds: sidecarKinds,
      namespaces,
      log,
      registry,
      startTimeoutMs: 15_000,
    });
    secrets = new KubeSecretStore({ client, namespaces, log, registry, startTimeoutMs: 15_000 });
  }
  try {
    await secrets.start();
  } catch (e) {
    // Reading Secrets is a privilege many users of explain lack: everything else still works.
    process.stderr.write(
      `kubectl nox explain: Secrets not read (${(e as Error).message}): API keys, opaque tokens and logins cannot be checked\n`,
    );
    await secrets.stop().catch(() => undefined);
    secrets = new NoSecrets();
  }
  let quota: Parameters<typeof Explainer.open>[0]['quota'];
  if (values.redis) {
    const settings = loadSettings({
      NOX_QUOTA_STORE: values['redis-cluster'] ? 'redis-cluster' : 'redis',
      NOX_REDIS_NODES: values.redis,
      ...(values['redis-password-file'] ? { NOX_REDIS_PASSWORD_FILE: values['redis-password-file'] } : {}),
    });
    quota = await quotaStoreFor(settings, redisTargetsFor(settings), log, registry);
  }
  return { source, secrets, ...(kube ? { kube } : {}), ...(quota ? { quota } : {}), log };
}

/** The explanation as a person reads it. */
export function render(e: Explanation): string {
  const lines = [`${e.request.method} ${e.request.host}${e.request.path}`];
  const verdict = e.decision.allowed
    ? 'ALLOW (200)'
    : `DENY ${e.decision.code} (${e.decision.status}): ${e.decision.reason ?? ''}`;
  lines.push(`  decision:     ${verdict}`);
  lines.push(
    `  policy:       ${e.accessPolicy ? `AccessPolicy ${e.accessPolicy}` : 'none'}${e.rule ? `, rule ${e.rule}` : ''}`,
  );
  if (e.identity === null) lines.push('  identity:     anonymous');
  else if (e.identity)
    lines.push(
      `  identity:     ${e.identity.subject} by ${e.identity.method}${e.identity.groups.length ? ` (groups ${e.identity.groups.join(', ')})` : ''}`,
    );
  else lines.push('  identity:     not established');
  if (e.quota.length === 0) lines.push('  quota:        nothing charged');
  for (const q of e.quota) {
    const window = q.windowSeconds !== undefined ? `per ${q.windowSeconds} s` : `until ${q.resetsAt}`;
    const left = q.remaining !== undefined ? `, ${q.remaining} left` : '';
    lines.push(
      `  quota:        QuotaPolicy ${q.policy} tier ${q.tier} limit ${q.limit}: ${q.requests} ${window}, costs ${q.cost}${left}`,
    );
  }
  if (e.wouldDeny) lines.push(`  dry run:      would deny ${e.wouldDeny.code}: ${e.wouldDeny.reason}`);
  for (const a of e.assumptions) lines.push(`  assumed:      ${a}`);
  return `${lines.join('\n')}\n`;
}
