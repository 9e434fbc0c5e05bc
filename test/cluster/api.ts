import { request } from 'node:https';

export interface ApiCredentials {
  server: string;
  ca: string;
  cert: string;
  key: string;
}

export interface ApiResult<T = Record<string, unknown>> {
  status: number;
  body: T;
}

/**
 * The few API calls the harness makes itself (readiness, the volume provisioner, the DNS
 * Service), over node:https with the admin's client certificate. Tests use kubectl, helm or
 * common/kube with the node's kubeconfig; this keeps the harness free of a client library.
 */
export function api<T = Record<string, unknown>>(
  creds: ApiCredentials,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 5000,
): Promise<ApiResult<T>> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      `${creds.server}${path}`,
      {
        method,
        ca: creds.ca,
        cert: creds.cert,
        key: creds.key,
        timeout: timeoutMs,
        agent: false,
        headers: payload
          ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
          : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : {};
          } catch {
            /* not JSON (/readyz answers "ok") */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed as T });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Creates an object; an existing one (409) counts as done, so a retried start is harmless. */
export async function ensure(creds: ApiCredentials, collection: string, object: unknown): Promise<void> {
  const res = await api(creds, 'POST', collection, object);
  if (res.status !== 201 && res.status !== 200 && res.status !== 409) {
    throw new Error(`POST ${collection}: ${res.status} ${JSON.stringify(res.body)}`);
  }
}
