/**
 * Failpoints (after etcd's gofail): named places where a test makes the process die as a crash
 * would, to show that what it leaves behind is safe to start again from. NOX_FAILPOINTS is a
 * comma-separated list of names; read once at start, absent in production, where a failpoint
 * costs one Set lookup. Not a setting: nothing but a test should set it.
 */
const armed = new Set(
  (process.env.NOX_FAILPOINTS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);

/** Dies by SIGKILL here when `name` is armed: no cleanup, no flushed log line after this one. */
export function failpoint(name: string): void {
  if (!armed.has(name)) return;
  process.stderr.write(`failpoint ${name}: killing the process\n`);
  process.kill(process.pid, 'SIGKILL');
}
