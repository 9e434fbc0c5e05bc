import { parseArgs } from 'node:util';
import { adminOptions, adminTargetOf, CliError, callAdmin } from '../adminClient.js';
import { durationMs } from './audit.js';

export const overrideUsage = `kubectl nox override: per-subject exceptions to a QuotaPolicy (in force on every sidecar within a second)

  kubectl nox override list   [--policy ns/name] [-o text|json]
  kubectl nox override create --policy ns/name --subject User=corp:alice [--subject ...]
                              [--tier pro] [--limit requests=5000,window=1h]... [--reason text] [--expires 7d]
  kubectl nox override delete ID

--subject: one part of the quota key per flag, as the QuotaPolicy's subject lists them
(User=<provider>:<sub>, Client=..., SourceIP=..., ApiKey=..., Header=..., Claim=...).`;

interface Override {
  id: string;
  subject?: string | null;
  subjectHash: string;
  policy: string;
  tier?: string | null;
  limits?: unknown;
  reason?: string | null;
  expiresAt?: string | null;
  createdBy?: string;
}

/** `requests=5000,window=1h` or `requests=100000,calendar=Month,name=monthly` → a limit object. */
export function parseLimit(s: string): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const part of s.split(',')) {
    const [k, v] = part.split('=');
    if (!k || v === undefined || !['requests', 'window', 'calendar', 'name'].includes(k))
      throw new CliError(
        `--limit ${JSON.stringify(s)}: expected requests=N,window=1h (or calendar=Month, name=...)`,
        2,
      );
    out[k] = k === 'requests' ? Number(v) : v;
  }
  if (!Number.isInteger(out.requests))
    throw new CliError(`--limit ${JSON.stringify(s)}: requests must be a whole number`, 2);
  return out;
}

export async function overrideCommand(argv: readonly string[], out: NodeJS.WritableStream): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      policy: { type: 'string' },
      subject: { type: 'string', multiple: true },
      tier: { type: 'string' },
      limit: { type: 'string', multiple: true },
      reason: { type: 'string' },
      expires: { type: 'string' },
      ...adminOptions,
    },
  });
  if (values.help || verb === undefined) {
    out.write(`${overrideUsage}\n`);
    return verb === undefined ? 2 : 0;
  }
  const target = () => adminTargetOf(values);
  const print = (o: Override) =>
    out.write(
      values.output === 'json'
        ? `${JSON.stringify(o)}\n`
        : `${o.id}  ${o.policy}  ${o.subject ?? o.subjectHash}  ${o.tier ? `tier ${o.tier}` : ''}${o.limits ? ` limits ${JSON.stringify(o.limits)}` : ''}${o.expiresAt ? ` until ${o.expiresAt}` : ''}\n`,
    );
  switch (verb) {
    case 'list': {
      const r = await callAdmin<{ items: Override[] }>(await target(), 'GET', '/v1/overrides', {
        query: { policy: values.policy },
      });
      for (const o of r.items) print(o);
      return 0;
    }
    case 'create': {
      if (!values.policy || !values.subject?.length)
        throw new CliError('override create: --policy and at least one --subject', 2);
      if (!values.tier && !values.limit?.length) throw new CliError('override create: --tier or --limit', 2);
      const body = {
        policy: values.policy,
        subject: values.subject,
        ...(values.tier ? { tier: values.tier } : {}),
        ...(values.limit?.length ? { limits: values.limit.map(parseLimit) } : {}),
        ...(values.reason ? { reason: values.reason } : {}),
        ...(values.expires
          ? { expiresAt: new Date(Date.now() + durationMs(values.expires)).toISOString() }
          : {}),
      };
      print(await callAdmin<Override>(await target(), 'PUT', '/v1/overrides', { body }));
      return 0;
    }
    case 'delete': {
      const id = positionals[0];
      if (!id) throw new CliError('override delete ID', 2);
      await callAdmin(await target(), 'DELETE', `/v1/overrides/${encodeURIComponent(id)}`);
      out.write(`override ${id} deleted\n`);
      return 0;
    }
    default:
      throw new CliError(`override ${verb}: list, create or delete`, 2);
  }
}
