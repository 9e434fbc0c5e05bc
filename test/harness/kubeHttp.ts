import { request } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { type Service, waitUntil } from './process.js';

export interface KubeResponse {
  readonly status: number;
  readonly body: unknown;
}

/**
 * Raw requests to the API server as the kubeconfig's user, for what the typed client does
 * not cover: server-side apply with strict field validation (what `kubectl apply
 * --server-side` sends), the Table form `kubectl get` prints, and discovery.
 */
export function kubeRequest(
  kc: KubeConfig,
  method: string,
  path: string,
  opts: { body?: string; contentType?: string; accept?: string } = {},
): Promise<KubeResponse> {
  const cluster = kc.getCurrentCluster();
  const user = kc.getCurrentUser();
  if (!cluster || !user) throw new Error('kubeconfig has no current cluster or user');
  const url = new URL(path, cluster.server);
  const b64 = (s: string | undefined) => (s ? Buffer.from(s, 'base64') : undefined);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        ca: b64(cluster.caData),
        cert: b64(user.certData),
        key: b64(user.keyData),
        headers: {
          accept: opts.accept ?? 'application/json',
          ...(opts.body !== undefined
            ? {
                'content-type': opts.contentType ?? 'application/json',
                'content-length': Buffer.byteLength(opts.body),
              }
            : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            /* not JSON */
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
      },
    );
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

/** `kubectl apply --server-side --field-manager=<manager>` of one object. */
export function serverSideApply(
  kc: KubeConfig,
  apiPath: string,
  object: Record<string, unknown>,
  manager = 'nox-test',
) {
  const meta = object.metadata as { name: string };
  return kubeRequest(
    kc,
    'PATCH',
    `${apiPath}/${meta.name}?fieldManager=${manager}&fieldValidation=Strict&force=true`,
    {
      body: JSON.stringify(object),
      contentType: 'application/apply-patch+yaml',
    },
  );
}

/**
 * The Table `kubectl get` prints: column names and the cells of each row, as kubectl shows
 * them (priority-0 columns), and with `wide` as `-o wide` shows them.
 */
export async function kubectlGet(
  kc: KubeConfig,
  listPath: string,
  wide = false,
): Promise<{ columns: string[]; rows: unknown[][] }> {
  const res = await kubeRequest(kc, 'GET', listPath, {
    accept: 'application/json;as=Table;v=v1;g=meta.k8s.io',
  });
  if (res.status !== 200)
    throw new Error(`GET ${listPath} as Table: ${res.status} ${JSON.stringify(res.body)}`);
  const table = res.body as {
    columnDefinitions: { name: string; priority: number }[];
    rows: { cells: unknown[] }[];
  };
  const shown = table.columnDefinitions.map((c) => wide || c.priority === 0);
  return {
    columns: table.columnDefinitions.filter((_, i) => shown[i]).map((c) => c.name),
    rows: table.rows.map((r) => r.cells.filter((_, i) => shown[i])),
  };
}

/** One object by its API path; undefined when it does not exist. */
export async function getObject<T>(kc: KubeConfig, path: string): Promise<T | undefined> {
  const r = await kubeRequest(kc, 'GET', path);
  if (r.status === 404) return undefined;
  if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
  return r.body as T;
}

/**
 * Polls an object until `ok` holds and returns it; on timeout the error carries its last status (what
 * a reader of the failure needs first). `watched`: a process whose exit fails the wait early.
 */
export async function waitForObject<T extends { status?: unknown }>(
  kc: KubeConfig,
  path: string,
  what: string,
  ok: (obj: T | undefined) => boolean,
  timeoutMs: number,
  watched?: Service,
): Promise<T> {
  let last: T | undefined;
  try {
    await waitUntil(
      what,
      async () => {
        last = await getObject<T>(kc, path);
        return ok(last);
      },
      timeoutMs,
      watched,
    );
  } catch (e) {
    throw new Error(`${(e as Error).message}; last status: ${JSON.stringify(last?.status, null, 1)}`, {
      cause: e,
    });
  }
  return last as T;
}
