import { parseArgs } from 'node:util';
import { adminOptions, adminTargetOf, CliError, callAdmin } from '../adminClient.js';
import { durationMs } from './audit.js';

export const revokeUsage = `kubectl nox revoke: refuse a subject, a token or a browser session on every sidecar (within about a second)

  kubectl nox revoke --subject corp:alice [--for 7d] [--reason text]
  kubectl nox revoke --token-file token.txt [--reason text]        (the token is hashed by the admin API, never stored)
  kubectl nox revoke --session HASH [--reason text]                (a hash kubectl nox sessions lists)
  kubectl nox revoke --list                                        (revocations and RiskModel blocks in force)
  kubectl nox revoke --lift ID [--reason text]                     (an id --list shows: subject:…, token:…, block:…)`;

export async function revokeCommand(argv: readonly string[], out: NodeJS.WritableStream): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      subject: { type: 'string' },
      'token-file': { type: 'string' },
      session: { type: 'string' },
      for: { type: 'string' },
      reason: { type: 'string' },
      list: { type: 'boolean' },
      lift: { type: 'string' },
      ...adminOptions,
    },
  });
  if (values.help) {
    out.write(`${revokeUsage}\n`);
    return 0;
  }
  const target = await adminTargetOf(values);
  if (values.list) {
    const r = await callAdmin<{ items: { id?: string; kind?: string; until?: string }[] }>(
      target,
      'GET',
      '/v1/revocations',
    );
    for (const e of r.items)
      out.write(
        values.output === 'json' ? `${JSON.stringify(e)}\n` : `${e.id ?? e.kind}  until ${e.until ?? ''}\n`,
      );
    return 0;
  }
  if (values.lift !== undefined) {
    await callAdmin(target, 'DELETE', `/v1/revocations/${encodeURIComponent(values.lift)}`, {
      query: { reason: values.reason },
    });
    out.write(
      values.output === 'json' ? `${JSON.stringify({ lifted: values.lift })}\n` : `lifted ${values.lift}\n`,
    );
    return 0;
  }
  const given = [values.subject, values['token-file'], values.session].filter((v) => v !== undefined);
  if (given.length !== 1)
    throw new CliError('revoke: exactly one of --subject, --token-file, --session (or --list, --lift)', 2);
  // A token on the command line would be in the shell's history and in ps: it is read from a file.
  const { readFileSync } = await import('node:fs');
  const [kind, value] = values.subject
    ? ['subject', values.subject]
    : values.session
      ? ['session', values.session]
      : ['token', readFileSync(values['token-file']!, 'utf8').trim()];
  const body = {
    kind,
    value,
    ...(values.for ? { until: new Date(Date.now() + durationMs(values.for)).toISOString() } : {}),
    ...(values.reason ? { reason: values.reason } : {}),
  };
  const r = await callAdmin<Record<string, unknown>>(target, 'POST', '/v1/revocations', { body });
  out.write(
    values.output === 'json'
      ? `${JSON.stringify(r)}\n`
      : `revoked ${kind}${kind === 'token' ? '' : ` ${value}`}\n`,
  );
  return 0;
}
