import { accessSync, constants, existsSync, lstatSync, readlinkSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout's root, whether this runs from source (vitest) or compiled (dist/, bench). */
export const repoRoot = findRoot(dirname(fileURLToPath(import.meta.url)));

function findRoot(from: string): string {
  let dir = from;
  while (!existsSync(join(dir, 'Makefile')) || dir.endsWith('/dist')) {
    const up = resolve(dir, '..');
    if (up === dir) throw new Error(`no Makefile above ${from}`);
    dir = up;
  }
  return dir;
}
export const toolsBin = join(repoRoot, '.tools', 'bin');
/** Scratch space for data dirs, configs and logs of the services tests start. */
export const runDir = join(repoRoot, '.run');

/**
 * Path of a tool installed by `make tools`. A missing tool is a failure, never a skip:
 * a test that needs a real component must not pass without it. Where the .tools/bin
 * symlink points, not the link: a tool run as another user (PostgreSQL as `postgres`, a pod's
 * process as its runAsUser) cannot traverse a checkout that only its owner may enter. The
 * link's target keeps its own name: redis-server is itself a link to redis-check-rdb and
 * decides what to be by the name it is run as.
 */
export function tool(name: string): string {
  const path = join(toolsBin, name);
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(`${name} is not installed at ${path}; run \`make tools\``);
  }
  const target = lstatSync(path).isSymbolicLink() ? resolve(toolsBin, readlinkSync(path)) : path;
  return join(realpathSync(dirname(target)), basename(target));
}
