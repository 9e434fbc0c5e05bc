import { parseArgs } from 'node:util';
import { adminOptions, adminTargetOf, CliError, callAdmin } from '../adminClient.js';

export const sessionsUsage = `kubectl nox sessions: a subject's browser sessions, and ending one

  kubectl nox sessions list --subject corp:alice [-o text|json]
  kubectl nox sessions end HASH [--reason text]`;

interface Session {
  hash: string;
  subject: string;
  createdAt: string;
  expiresAt: string;
  refreshedAt?: string | null;
}

export async function sessionsCommand(argv: readonly string[], out: NodeJS.WritableStream): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      subject: { type: 'string' },
      reason: { type: 'string' },
      ...adminOptions,
    },
  });
  if (values.help || verb === undefined) {
    out.write(`${sessionsUsage}\n`);
    return verb === undefined ? 2 : 0;
  }
  const target = () => adminTargetOf(values);
  if (verb === 'list') {
    if (!values.subject) throw new CliError('sessions list --subject <provider>:<sub>', 2);
    const r = await callAdmin<{ items: Session[] }>(await target(), 'GET', '/v1/sessions', {
      query: { subject: values.subject },
    });
    for (const s of r.items)
      out.write(
        values.output === 'json'
          ? `${JSON.stringify(s)}\n`
          : `${s.hash}  ${s.subject}  since ${s.createdAt}  until ${s.expiresAt}${s.refreshedAt ? `  refreshed ${s.refreshedAt}` : ''}\n`,
      );
    return 0;
  }
  if (verb === 'end') {
    const hash = positionals[0];
    if (!hash) throw new CliError('sessions end HASH', 2);
    await callAdmin(await target(), 'DELETE', `/v1/sessions/${encodeURIComponent(hash)}`, {
      query: { reason: values.reason },
    });
    out.write(`session ${hash} ended\n`);
    return 0;
  }
  throw new CliError(`sessions ${verb}: list or end`, 2);
}
