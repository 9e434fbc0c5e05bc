#!/usr/bin/env node
// kubectl-nox: the kubectl plugin (package.json `bin`; `kubectl nox ...` finds it on PATH).
import { run } from './nox.mjs';

await run('cli', process.argv.slice(2));
