import { execFile } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type Service, start } from '../harness/process.js';
import { repoRoot, runDir } from '../harness/tools.js';

/**
 * Runs the images scripts/images.sh built without Kubernetes: each archive is turned into an
 * OCI layout (skopeo) and unpacked into a runtime bundle (umoci, which writes the image's
 * user, environment, entrypoint and working directory into config.json), then run with runc
 * the way a kubelet would: a read-only root filesystem, the pod's user, volumes as bind
 * mounts, its own network namespace (loopback up), probes as `runc exec`.
 */

const run = promisify(execFile);

export interface ImageEntry {
  readonly name: string;
  readonly ref: string;
  readonly archive: string;
  readonly imageId: string;
  readonly built: boolean;
  readonly seconds: number;
}

export interface ImageIndex {
  readonly images: readonly ImageEntry[];
  readonly steps: readonly string[];
  readonly seconds: number;
}

/** Builds what changed (a no-op when nothing did) and reads .run/images/index.json. */
export async function buildImages(): Promise<ImageIndex> {
  await run('bash', [join(repoRoot, 'scripts', 'images.sh')], { maxBuffer: 64 << 20 });
  return JSON.parse(readFileSync(join(runDir, 'images', 'index.json'), 'utf8')) as ImageIndex;
}

export interface Bundle {
  readonly dir: string;
  /** config.json as umoci wrote it from the image's configuration. */
  readonly config: RuntimeSpec;
}

interface Mount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

export interface RuntimeSpec {
  process: {
    terminal?: boolean;
    user: { uid: number; gid: number; additionalGids?: number[] };
    args: string[];
    env: string[];
    cwd: string;
  };
  root: { path: string; readonly?: boolean };
  mounts: Mount[];
  hooks?: Record<string, { path: string; args?: string[] }[]>;
  linux: { namespaces: { type: string; path?: string }[] };
}

/** The image of `archive` unpacked into a fresh bundle under `workDir`. */
export async function unpack(image: ImageEntry, workDir: string): Promise<Bundle> {
  const layout = join(workDir, `${image.name}-oci`);
  const dir = join(workDir, `${image.name}-bundle`);
  rmSync(layout, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
  await run('skopeo', ['copy', '-q', `docker-archive:${image.archive}`, `oci:${layout}:image`]);
  await run('umoci', ['unpack', '--image', `${layout}:image`, dir]);
  rmSync(layout, { recursive: true, force: true });
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as RuntimeSpec;
  return { dir, config };
}

export interface ContainerOptions {
  /** The command line (the image's entrypoint + command when omitted). */
  args?: string[];
  env?: Record<string, string>;
  user?: { uid: number; gid: number };
  /** Bind mounts: container path → host path. */
  volumes?: Record<string, { source: string; readOnly?: boolean }>;
}

const runcRoot = join(runDir, 'runc');

/**
 * A volume's directory: owned by uid:gid and private to them, as the kubelet prepares a
 * writable volume for the pod's fsGroup; without an owner, root's and readable by all, as a
 * ConfigMap or downward API volume.
 */
export function volumeDir(path: string, owner?: { uid: number; gid: number }): string {
  mkdirSync(path, { recursive: true });
  chmodSync(path, owner ? 0o770 : 0o755);
  if (owner) chownSync(path, owner.uid, owner.gid);
  return path;
}

/**
 * The bundle's runtime spec for one run: read-only root, the options' user, environment and
 * mounts, and a hook that brings up loopback in the container's new network namespace (runc
 * leaves it down; a kubelet's CNI loopback plugin does this in a pod).
 */
function specFor(bundle: Bundle, opts: ContainerOptions): RuntimeSpec {
  const spec = structuredClone(bundle.config);
  spec.process.terminal = false;
  spec.root.readonly = true;
  if (opts.args) spec.process.args = opts.args;
  if (opts.user)
    spec.process.user = { uid: opts.user.uid, gid: opts.user.gid, additionalGids: [opts.user.gid] };
  const env = new Map(spec.process.env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
  for (const [k, v] of Object.entries(opts.env ?? {})) env.set(k, v);
  spec.process.env = [...env].map(([k, v]) => `${k}=${v}`);
  for (const [destination, v] of Object.entries(opts.volumes ?? {}))
    spec.mounts.push({
      destination,
      type: 'bind',
      source: v.source,
      options: ['rbind', v.readOnly ? 'ro' : 'rw', 'nosuid', 'nodev'],
    });
  if (!spec.linux.namespaces.some((n) => n.type === 'network'))
    spec.linux.namespaces.push({ type: 'network' });
  const loopbackUp =
    "const s=JSON.parse(require('fs').readFileSync(0,'utf8'));" +
    "require('child_process').execFileSync('nsenter',['-t',String(s.pid),'-n','ip','link','set','lo','up'])";
  spec.hooks = { createRuntime: [{ path: process.execPath, args: ['node', '-e', loopbackUp] }] };
  return spec;
}

export interface Container {
  readonly id: string;
  readonly service: Service;
  /** Runs a command in the container (as a kubelet's exec probe does); never throws. */
  exec(
    args: string[],
    opts?: { env?: Record<string, string>; user?: { uid: number; gid: number } },
  ): Promise<{
    code: number;
    stdout: string;
    stderr: string;
  }>;
  stop(): Promise<void>;
}

let sequence = 0;

/** Starts the image's process under runc (recorded in .run/pids/ like every harness service). */
export function startContainer(name: string, bundle: Bundle, opts: ContainerOptions = {}): Container {
  const id = `nox-image-test-${process.pid}-${name}-${++sequence}`;
  const dir = `${bundle.dir}-${id}`;
  mkdirSync(dir, { recursive: true });
  const spec = specFor(bundle, opts);
  spec.root.path = join(bundle.dir, 'rootfs');
  writeFileSync(join(dir, 'config.json'), JSON.stringify(spec, null, 2));
  mkdirSync(runcRoot, { recursive: true });
  const service = start(id, 'runc', ['--root', runcRoot, 'run', '--bundle', dir, id]);
  const exec: Container['exec'] = async (args, o = {}) => {
    const user = o.user ?? spec.process.user;
    const env = Object.entries(o.env ?? {}).flatMap(([k, v]) => ['--env', `${k}=${v}`]);
    try {
      const r = await run('runc', [
        '--root',
        runcRoot,
        'exec',
        '--user',
        `${user.uid}:${user.gid}`,
        ...env,
        id,
        ...args,
      ]);
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      return {
        code: typeof err.code === 'number' ? err.code : -1,
        stdout: err.stdout ?? '',
        stderr: err.stderr ?? '',
      };
    }
  };
  const stop = async () => {
    await service.stop(10_000);
    await run('runc', ['--root', runcRoot, 'delete', '--force', id]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  return { id, service, exec, stop };
}

/** Runs the image's process to its end; its exit code and output. */
export async function runToEnd(
  bundle: Bundle,
  opts: ContainerOptions,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const id = `nox-image-test-${process.pid}-once-${++sequence}`;
  const dir = `${bundle.dir}-${id}`;
  mkdirSync(dir, { recursive: true });
  const spec = specFor(bundle, opts);
  spec.root.path = join(bundle.dir, 'rootfs');
  writeFileSync(join(dir, 'config.json'), JSON.stringify(spec, null, 2));
  mkdirSync(runcRoot, { recursive: true });
  try {
    const r = await run('runc', ['--root', runcRoot, 'run', '--bundle', dir, id], { timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return {
      code: typeof err.code === 'number' ? err.code : -1,
      stdout: err.stdout ?? '',
      stderr: err.stderr ?? '',
    };
  } finally {
    await run('runc', ['--root', runcRoot, 'delete', '--force', id]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}
