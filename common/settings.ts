/**
 * Process settings, the way every Nox program reads them: one definition per setting (its
 * environment variable, default and meaning), read once at start, validated, then frozen.
 * `--help` prints the same definitions, so the docs cannot drift from the code.
 */

export interface Definition<T> {
  readonly env: string;
  readonly default: T;
  readonly doc: string;
  parse(raw: string): T;
}

export type Definitions = Record<string, Definition<unknown>>;
export type SettingsOf<D extends Definitions> = { readonly [K in keyof D]: ReturnType<D[K]['parse']> };

export const port = (raw: string): number => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new Error(`must be a port number 0-65535, got "${raw}"`);
  return n;
};

export const intIn =
  (min: number, max: number) =>
  (raw: string): number => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new Error(`must be an integer ${min}-${max}, got "${raw}"`);
    return n;
  };

export const positiveInt = (max: number) => intIn(1, max);

export const oneOf =
  <T extends string>(...values: T[]) =>
  (raw: string): T => {
    if (!(values as string[]).includes(raw))
      throw new Error(`must be one of ${values.join(', ')}, got "${raw}"`);
    return raw as T;
  };

export const bool = (raw: string): boolean => {
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  throw new Error(`must be true or false, got "${raw}"`);
};

export const nonEmpty = (raw: string): string => {
  if (raw.length === 0) throw new Error('must not be empty');
  return raw;
};

export const text = (raw: string): string => raw;

export const logLevel: Definition<'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'> = {
  env: 'NOX_LOG_LEVEL',
  default: 'info',
  doc: 'pino log level.',
  parse: oneOf('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'),
};

/** Every setting from the environment (default when unset or empty), and what was wrong, by variable. */
export function readSettings<D extends Definitions>(
  definitions: D,
  env: NodeJS.ProcessEnv,
): { values: SettingsOf<D>; problems: string[] } {
  const out: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [key, def] of Object.entries(definitions)) {
    const raw = env[def.env];
    if (raw === undefined || raw === '') {
      out[key] = def.default;
      continue;
    }
    try {
      out[key] = def.parse(raw);
    } catch (e) {
      problems.push(`${def.env}: ${(e as Error).message}`);
    }
  }
  return { values: out as SettingsOf<D>, problems };
}

export function failIfProblems(problems: readonly string[]): void {
  if (problems.length > 0) throw new Error(`invalid settings:\n  ${problems.join('\n  ')}`);
}

export function describeDefinitions(definitions: Definitions): string {
  return Object.values(definitions)
    .map((d) => `  ${d.env} (default ${JSON.stringify(d.default)})\n      ${d.doc}`)
    .join('\n');
}
