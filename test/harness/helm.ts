import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratchDir } from './process.js';
import { repoRoot, runDir, tool } from './tools.js';

export interface HelmResult {
  stdout: string;
  stderr: string;
  /** The exit code; 0 on success. */
  code: number;
}

export interface HelmOptions {
  /** Sets KUBECONFIG for commands that talk to a cluster (install, upgrade, ...). */
  kubeconfig?: string;
  env?: NodeJS.ProcessEnv;
  /** Defaults to the repository root, so `charts/nox` works as a chart path. */
  cwd?: string;
  timeoutMs?: number;
}

/**
 * Runs .tools/bin/helm with its cache, config and data homes under .run/helm/, so that
 * nothing from (or to) the user's ~/.cache/helm, ~/.config/helm or repositories leaks into
 * a test. Never throws on a non-zero exit: the caller asserts on `code`.
 */
export function helm(args: string[], opts: HelmOptions = {}): Promise<HelmResult> {
  const bin = tool('helm');
  const home = join(runDir, 'helm');
  const dirs = {
    HELM_CACHE_HOME: join(home, 'cache'),
    HELM_CONFIG_HOME: join(home, 'config'),
    HELM_DATA_HOME: join(home, 'data'),
  };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    ...dirs,
    HELM_NO_PLUGINS: '1',
    ...(opts.kubeconfig ? { KUBECONFIG: opts.kubeconfig } : {}),
    ...opts.env,
  };
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      args,
      { cwd: opts.cwd ?? repoRoot, env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          reject(new Error(`helm ${args.join(' ')} could not run: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ stdout, stderr, code: err ? (err.code as number) : 0 });
      },
    );
  });
}

/**
 * A copy of charts/nox that also renders `templates/zz-test-pod.yaml`: a Pod `gateway` made
 * of the chart's sidecar container and volumes templates. The chart has no workload of its
 * own (NOTES.txt prints the container for users to paste), so this is how a test sees that
 * container as Kubernetes would read it.
 */
export function chartWithGatewayPod(): string {
  const dir = join(scratchDir('helm-chart'), 'nox');
  cpSync(join(repoRoot, 'charts', 'nox'), dir, { recursive: true });
  writeFileSync(
    join(dir, 'templates', 'zz-test-pod.yaml'),
    [
      'apiVersion: v1',
      'kind: Pod',
      'metadata:',
      '  name: gateway',
      '  namespace: {{ .Release.Namespace }}',
      'spec:',
      '  serviceAccountName: {{ include "nox.serviceAccountName" . }}',
      '  containers:',
      '    - {{ include "nox.sidecarContainer" . | nindent 6 | trim }}',
      '  {{- with include "nox.sidecarVolumes" . | trim }}',
      '  volumes:',
      '    {{- . | nindent 4 }}',
      '  {{- end }}',
      '',
    ].join('\n'),
  );
  return dir;
}
