import { CliError } from './adminClient.js';
import { auditCommand, auditUsage } from './commands/audit.js';
import { explainCommand, explainUsage } from './commands/explain.js';
import { overrideCommand, overrideUsage } from './commands/override.js';
import { revokeCommand, revokeUsage } from './commands/revoke.js';
import { sessionsCommand, sessionsUsage } from './commands/sessions.js';
import { usageCommand, usageUsage } from './commands/usage.js';

/**
 * kubectl-nox: the kubectl plugin (`kubectl nox <command>`, found on PATH as kubectl-nox).
 * explain runs the sidecar's request path locally against the cluster's (or the files')
 * policies; the other commands call the admin API, which asks the API server (TokenReview,
 * SubjectAccessReview) whether the caller may.
 */
const commands: Record<
  string,
  { run: (argv: readonly string[], out: NodeJS.WritableStream) => Promise<number>; usage: string }
> = {
  explain: { run: explainCommand, usage: explainUsage },
  audit: { run: auditCommand, usage: auditUsage },
  override: { run: overrideCommand, usage: overrideUsage },
  usage: { run: usageCommand, usage: usageUsage },
  revoke: { run: revokeCommand, usage: revokeUsage },
  sessions: { run: sessionsCommand, usage: sessionsUsage },
};

function usage(): string {
  const first = (u: string) => u.split('\n')[0];
  return `usage: kubectl nox <command> [flags]   (kubectl nox <command> --help for its flags)\n\n${Object.values(
    commands,
  )
    .map((c) => `  ${first(c.usage)}`)
    .join('\n')}\n`;
}

export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`kubectl nox: unknown command ${JSON.stringify(name)}\n${usage()}`);
    return 2;
  }
  try {
    return await command.run(rest, process.stdout);
  } catch (e) {
    if (e instanceof CliError) {
      process.stderr.write(`kubectl nox ${name}: ${e.message}\n`);
      return e.exitCode;
    }
    // parseArgs' errors (unknown flag, missing value) are usage errors too.
    if ((e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`kubectl nox ${name}: ${(e as Error).message}\n`);
      return 2;
    }
    process.stderr.write(`kubectl nox ${name}: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
