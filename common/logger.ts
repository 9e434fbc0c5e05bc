import { type Logger, type LoggerOptions, pino } from 'pino';

export type { Logger };

/**
 * Structured JSON logs for every Nox program. Redaction lives here, not at call sites:
 * anything that can carry a credential is censored before it is serialized.
 */
export const redactPaths = [
  'authorization',
  'cookie',
  'token',
  'password',
  'secret',
  '*.authorization',
  '*.cookie',
  '*.token',
  '*.password',
  '*.secret',
  'headers.authorization',
  'headers.cookie',
  'headers["proxy-authorization"]',
  'req.headers.authorization',
  'req.headers.cookie',
];

export function createLogger(name: string, opts: { level?: string; destination?: number } = {}): Logger {
  const options: LoggerOptions = {
    name,
    level: opts.level ?? process.env.NOX_LOG_LEVEL ?? 'info',
    redact: { paths: redactPaths, censor: '[redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
  return pino(options, pino.destination({ dest: opts.destination ?? 1, sync: true }));
}
