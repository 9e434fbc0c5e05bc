import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { format } from 'node:util';
import { runDir } from './tools.js';

const logDir = join(runDir, 'logs');
const logFile = join(logDir, 'tests.log');
const toStderr = process.env.NOX_TEST_LOG === 'stderr';

/**
 * What a reader of a test run may want besides pass or fail: how long a failover or a relist
 * took, the last state seen before a wait gave up. Written to .run/logs/tests.log (one file
 * per run, each line stamped with time and process), not to the console, where it would
 * interleave with the reporter's output; `NOX_TEST_LOG=stderr` prints it as well.
 */
export function testLog(...parts: unknown[]): void {
  const line = `${new Date().toISOString()} [pid ${process.pid}] ${format(...parts)}\n`;
  mkdirSync(logDir, { recursive: true });
  appendFileSync(logFile, line);
  if (toStderr) process.stderr.write(line);
}
