#!/usr/bin/env node
// nox-authz: the Envoy ext_authz server (package.json `bin`).
import { run } from './nox.mjs';

await run('authz', process.argv.slice(2));
