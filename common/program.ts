import type { Registry } from 'prom-client';
import { createLogger, type Logger } from './logger.js';
import { createRegistry } from './metrics.js';

export interface Program<S> {
  readonly settings: S;
  readonly log: Logger;
  readonly registry: Registry;
}

/**
 * How every Nox program starts: `--help` prints the settings and returns undefined; a bad
 * setting is one line on stderr and exit code 2 (nothing started); then the JSON logger,
 * the metrics registry, and unhandled rejections logged rather than killing the process.
 */
export function startProgram<S extends { readonly logLevel: string }>(program: {
  readonly name: string;
  readonly title: string;
  readonly describeSettings: () => string;
  readonly loadSettings: () => S;
}): Program<S> | undefined {
  if (process.argv.includes('--help')) {
    process.stdout.write(
      `${program.name}: ${program.title}\n\nSettings (environment):\n${program.describeSettings()}\n`,
    );
    return undefined;
  }
  let settings: S;
  try {
    settings = program.loadSettings();
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(2);
  }
  const log = createLogger(program.name, { level: settings.logLevel });
  const registry = createRegistry(program.name);
  process.on('unhandledRejection', (reason) => log.error({ err: String(reason) }, 'unhandled rejection'));
  return { settings, log, registry };
}

/**
 * Runs a program's async main. A failure before it is serving (a port in use, a store that
 * cannot be built) is one JSON line on stderr and exit code 1, so a supervisor (the kubelet,
 * systemd) sees the crash and restarts the process, instead of a process that logged an
 * unhandled rejection and stays up serving nothing.
 */
export function runMain(name: string, main: () => Promise<void>): void {
  main().catch((e: unknown) => {
    createLogger(name, { destination: 2 }).fatal(
      { err: e instanceof Error ? e.message : String(e) },
      'failed to start',
    );
    process.exit(1);
  });
}
