import { parseArgs } from 'node:util';
import { type AdminTarget, adminOptions, adminTargetOf, CliError, callAdmin } from '../adminClient.js';

export const auditUsage = `kubectl nox audit: the decisions the sidecars recorded

  kubectl nox audit search [--since 1h | --from T --to T] [--subject S] [--decision allow|deny]
                           [--code C] [--host H] [--path-prefix /p] [--policy ns/name] [--limit N] [-o text|json]
  kubectl nox audit tail   [same filters]    (prints new decisions as they are recorded; Ctrl-C ends)

Admin API: --admin-url or NOX_ADMIN_URL; --token, NOX_ADMIN_TOKEN or the kubeconfig user's token.`;

interface Decision {
  id: string;
  occurred_at?: string;
  occurredAt?: string;
  decision: string;
  code: string;
  method?: string;
  host?: string;
  path?: string;
  subject?: string | null;
  policy?: string | null;
  rule?: string | null;
}

interface Page {
  items: Decision[];
  nextCursor: string | null;
  servedBy: string;
}

const filterOptions = {
  since: { type: 'string' },
  from: { type: 'string' },
  to: { type: 'string' },
  subject: { type: 'string' },
  decision: { type: 'string' },
  code: { type: 'string' },
  host: { type: 'string' },
  'path-prefix': { type: 'string' },
  policy: { type: 'string' },
  limit: { type: 'string', default: '50' },
  ...adminOptions,
  'poll-ms': { type: 'string', default: '2000' },
} as const;

/** `30s`, `15m`, `2h`, `7d` → milliseconds. */
export function durationMs(s: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(s);
  if (!m) throw new CliError(`--since ${JSON.stringify(s)}: expected a duration like 30s, 15m, 2h, 7d`, 2);
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
}

export async function auditCommand(
  argv: readonly string[],
  out: NodeJS.WritableStream,
  signal?: AbortSignal,
): Promise<number> {
  const [verb, ...rest] = argv;
  const { values } = parseArgs({ args: rest, options: filterOptions, strict: true });
  if (values.help || verb === undefined || verb === 'help') {
    out.write(`${auditUsage}\n`);
    return verb === undefined ? 2 : 0;
  }
  if (verb !== 'search' && verb !== 'tail') throw new CliError(`audit ${verb}: search or tail`, 2);
  const target = await adminTargetOf(values);
  const filters = {
    subject: values.subject,
    decision: values.decision,
    code: values.code,
    host: values.host,
    pathPrefix: values['path-prefix'],
    policy: values.policy,
  };
  const from = values.since ? new Date(Date.now() - durationMs(values.since)).toISOString() : values.from;
  const print = (d: Decision) => out.write(values.output === 'json' ? `${JSON.stringify(d)}\n` : line(d));
  if (verb === 'search') {
    const page = await search(target, { ...filters, from, to: values.to, limit: Number(values.limit) });
    for (const d of page.items) print(d);
    if (values.output !== 'json' && page.nextCursor)
      out.write(`(more: narrow the filters or raise --limit)\n`);
    return 0;
  }
  await tail(
    target,
    filters,
    from ?? new Date(Date.now() - 60_000).toISOString(),
    Number(values['poll-ms']),
    print,
    signal,
  );
  return 0;
}

function search(target: AdminTarget, q: Record<string, string | number | undefined>): Promise<Page> {
  return callAdmin<Page>(target, 'GET', '/v1/audit/decisions', { query: q });
}

/**
 * New decisions, oldest first, as they arrive: each poll reads everything newer than the last
 * printed event (page by page: a burst bigger than a page is printed whole) and prints it in
 * time order. Events carry their sidecar's time and reach PostgreSQL in batches, so the window
 * starts a little before the newest printed event, and ids already printed are skipped.
 */
async function tail(
  target: AdminTarget,
  filters: Record<string, string | undefined>,
  from: string,
  pollMs: number,
  print: (d: Decision) => void,
  signal?: AbortSignal,
): Promise<void> {
  const seen = new Set<string>();
  let since = from;
  while (!signal?.aborted) {
    const fresh: Decision[] = [];
    let cursor: string | undefined;
    do {
      const page = await search(target, { ...filters, from: since, limit: 500, cursor });
      fresh.push(...page.items.filter((d) => !seen.has(d.id)));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    fresh.reverse();
    for (const d of fresh) {
      seen.add(d.id);
      print(d);
    }
    const newest = fresh.at(-1);
    if (newest) {
      // Late batches: look back the audit's flush interval and then some.
      since = new Date(Date.parse(timeOf(newest)) - 30_000).toISOString();
      if (seen.size > 100_000) seen.clear();
    }
    await new Promise<void>((r) => {
      const t = setTimeout(r, pollMs);
      signal?.addEventListener('abort', () => {
        clearTimeout(t);
        r();
      });
    });
  }
}

const timeOf = (d: Decision) => d.occurred_at ?? d.occurredAt ?? '';

function line(d: Decision): string {
  const who = d.subject ?? 'anonymous';
  const where = d.policy ? ` ${d.policy}${d.rule ? `#${d.rule}` : ''}` : '';
  return `${timeOf(d)}  ${d.decision.padEnd(5)} ${d.code.padEnd(22)} ${d.method ?? ''} ${d.host ?? ''}${d.path ?? ''}  ${who}${where}\n`;
}
