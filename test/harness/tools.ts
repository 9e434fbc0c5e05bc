import { accessSync, constants } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const toolsBin = join(repoRoot, '.tools', 'bin');
/** Scratch space for data dirs, configs and logs of the services tests start. */
export const runDir = join(repoRoot, '.run');

/**
 * Path of a tool installed by `make tools`. A missing tool is a failure, never a skip:
 * a test that needs a real component must not pass without it.
 */
export function tool(name: string): string {
  const path = join(toolsBin, name);
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(`${name} is not installed at ${path}; run \`make tools\``);
  }
  return path;
}
