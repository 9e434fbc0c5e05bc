import { parseArgs } from 'node:util';
import { adminOptions, adminTargetOf, CliError, callAdmin } from '../adminClient.js';
import { durationMs } from './audit.js';

export const usageUsage = `kubectl nox usage: what one subject used of its quotas, per hour, and what is left now

  kubectl nox usage --subject User=corp:alice [--subject ...] [--policy ns/name] [--since 24h] [-o text|json]

--subject: the quota key's parts, as the QuotaPolicy's subject lists them. With --policy the
admin API also reads each limit's remaining quota from the sidecars' Redis.`;

interface Usage {
  subjectHash: string;
  from: string;
  to: string;
  totals?: { policy: string; tier: string; requests: number; denied: number; cost: number }[];
  live?: {
    policy: string;
    tiers: {
      tier: string;
      limits: { name: string; requests: number; remaining: number; resetMs: number }[];
    }[];
  } | null;
  liveUnavailable?: string;
}

export async function usageCommand(argv: readonly string[], out: NodeJS.WritableStream): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      subject: { type: 'string', multiple: true },
      policy: { type: 'string' },
      since: { type: 'string', default: '24h' },
      ...adminOptions,
    },
  });
  if (values.help) {
    out.write(`${usageUsage}\n`);
    return 0;
  }
  if (!values.subject?.length) throw new CliError('usage: at least one --subject', 2);
  const target = await adminTargetOf(values);
  const u = await callAdmin<Usage>(target, 'GET', '/v1/usage', {
    query: {
      subject: values.subject,
      policy: values.policy,
      from: new Date(Date.now() - durationMs(values.since)).toISOString(),
    },
  });
  if (values.output === 'json') {
    out.write(`${JSON.stringify(u)}\n`);
    return 0;
  }
  out.write(`subject ${values.subject.join(' ')} (${u.subjectHash}), ${u.from} to ${u.to}\n`);
  if (!u.totals?.length) out.write('  nothing used\n');
  for (const t of u.totals ?? [])
    out.write(`  ${t.policy} tier ${t.tier}: ${t.requests} requests (${t.denied} denied), cost ${t.cost}\n`);
  for (const t of u.live?.tiers ?? [])
    for (const l of t.limits)
      out.write(
        `  now: ${u.live!.policy} tier ${t.tier} limit ${l.name}: ${l.remaining} of ${l.requests} left\n`,
      );
  if (u.liveUnavailable) out.write(`  (live remaining not read: ${u.liveUnavailable})\n`);
  return 0;
}
