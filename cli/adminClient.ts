import { readFileSync } from 'node:fs';
import { loadKubeConfig } from '../common/kube/config.js';

/** Where the admin API is and who calls it: `--admin-url`/NOX_ADMIN_URL, a bearer token. */
export interface AdminTarget {
  readonly url: string;
  readonly token: string;
}

export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    /** The process exit code: 1 a refusal or failure of the server, 2 a usage error. */
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** The flags every admin API command takes (parseArgs options), besides its own. */
export const adminOptions = {
  output: { type: 'string', short: 'o', default: 'text' },
  'admin-url': { type: 'string' },
  token: { type: 'string' },
  kubeconfig: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** adminTarget from the parsed adminOptions. */
export function adminTargetOf(values: {
  'admin-url'?: string | undefined;
  token?: string | undefined;
  kubeconfig?: string | undefined;
}): Promise<AdminTarget> {
  return adminTarget({ adminUrl: values['admin-url'], token: values.token, kubeconfig: values.kubeconfig });
}

/**
 * The admin API authenticates with TokenReview, so the plugin sends a bearer token: the
 * one given, else the kubeconfig user's (token or tokenFile), which is who `kubectl` is.
 * A kubeconfig that authenticates otherwise (client certificates, exec plugins) needs
 * `--token` (e.g. `kubectl create token <serviceaccount>`).
 */
export async function adminTarget(flags: {
  adminUrl?: string | undefined;
  token?: string | undefined;
  kubeconfig?: string | undefined;
}): Promise<AdminTarget> {
  const url = flags.adminUrl ?? process.env.NOX_ADMIN_URL;
  if (!url)
    throw new CliError(
      'the admin API is not known: pass --admin-url or set NOX_ADMIN_URL (e.g. after `kubectl port-forward svc/<release>-admin 9100`)',
      2,
    );
  let token = flags.token ?? process.env.NOX_ADMIN_TOKEN;
  if (!token) {
    const kc = await loadKubeConfig(flags.kubeconfig);
    const user = kc.getCurrentUser() as { token?: string; authProvider?: unknown } | null;
    const file = (user as { tokenFile?: string } | null)?.tokenFile;
    token = user?.token ?? (file ? readFileSync(file, 'utf8').trim() : undefined);
  }
  if (!token)
    throw new CliError(
      'no bearer token for the admin API: the kubeconfig user has none; pass --token (e.g. from `kubectl create token`)',
      2,
    );
  return { url: url.replace(/\/+$/, ''), token };
}

/** One call to the admin API; a refusal becomes a CliError with the server's own message. */
export async function callAdmin<T>(
  target: AdminTarget,
  method: 'GET' | 'PUT' | 'POST' | 'DELETE',
  path: string,
  options: { query?: Record<string, string | number | readonly string[] | undefined>; body?: unknown } = {},
): Promise<T> {
  const url = new URL(target.url + path);
  for (const [k, v] of Object.entries(options.query ?? {})) {
    if (Array.isArray(v)) for (const item of v) url.searchParams.append(k, item);
    else if (v !== undefined) url.searchParams.set(k, String(v));
  }
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: {
        authorization: `Bearer ${target.token}`,
        ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (e) {
    throw new CliError(`admin API at ${target.url} not reachable: ${(e as Error).message}`);
  }
  const text = await res.text();
  if (!res.ok) {
    let message = text;
    try {
      const b = JSON.parse(text) as { error?: string; message?: string };
      message = [b.error, b.message].filter(Boolean).join(': ') || text;
    } catch {
      /* not JSON: the text as it came */
    }
    throw new CliError(`${method} ${path}: ${res.status} ${message}`);
  }
  return (text ? JSON.parse(text) : undefined) as T;
}
