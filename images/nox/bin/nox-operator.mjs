#!/usr/bin/env node
// nox-operator: the operator (package.json `bin`).
import { run } from './nox.mjs';

await run('operator', process.argv.slice(2));
