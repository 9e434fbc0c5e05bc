#!/usr/bin/env node
// `nox <program> [arguments]`: the Nox image's entrypoint, one image for every program.
// Each program's own command (nox-authz, nox-operator: package.json `bin`) is this file with
// the program fixed. The programs live in dist/ (`npm run build`), two levels above.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const programs = {
  authz: '../../../dist/sidecar/main.js',
  operator: '../../../dist/operator/main.js',
  admin: '../../../dist/admin/main.js',
  cli: '../../../dist/cli/main.js',
};

/** Runs a program as if it had been started on its own: its arguments only in process.argv. */
export async function run(name, args) {
  const module = new URL(programs[name], import.meta.url);
  process.argv = [process.argv[0], fileURLToPath(module), ...args];
  await import(module.href);
}

function usage() {
  return `usage: nox <program> [--help]\nprograms: ${Object.keys(programs).join(', ')}\n`;
}

const invokedDirectly = process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  const [name = '', ...args] = process.argv.slice(2);
  const program = name.replace(/^nox-/, '');
  if (program in programs) await run(program, args);
  else {
    process.stderr.write(name ? `nox: unknown program "${name}"\n${usage()}` : usage());
    process.exitCode = 2;
  }
}
