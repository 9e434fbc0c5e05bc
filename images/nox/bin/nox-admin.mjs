#!/usr/bin/env node
// nox-admin: the admin API (package.json `bin`).
import { run } from './nox.mjs';

await run('admin', process.argv.slice(2));
