import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { tool } from '../tools.js';

/**
 * Image runtimes: what a container image would run, as host commands. Each also describes
 * the bits of the image's filesystem a process notices: its PATH and its /etc/passwd and
 * /etc/group (emulated with nss_wrapper).
 */
export interface ImageRuntime {
  /**
   * The container's argv (Kubernetes semantics: command replaces ENTRYPOINT, args replace
   * CMD) → the argv to run; argv[0] without a slash is then looked up in the PATH.
   */
  argv(command: string[] | undefined, args: string[] | undefined): string[];
  /** Extra args that put the process in "its own network namespace": listen on the pod IP only. */
  networkArgs(podIP: string): string[];
  /** Ports the process listens on besides the declared containerPorts (redis: the cluster bus). */
  extraPorts(ports: number[]): number[];
  /** The image's PATH (the container's, unless its env sets PATH). */
  path: string;
  /** The image's /etc/passwd and /etc/group. */
  passwd: string;
  group: string;
}

export class UnsupportedImage extends Error {}

/** `docker.io/library/redis:7.0` → `{ name: 'redis', tag: '7.0' }`. */
export function parseImage(image: string): { name: string; tag: string } {
  const noDigest = image.split('@')[0]!;
  const lastSlash = noDigest.lastIndexOf('/');
  const colon = noDigest.lastIndexOf(':');
  const tag = colon > lastSlash ? noDigest.slice(colon + 1) : 'latest';
  const noTag = colon > lastSlash ? noDigest.slice(0, colon) : noDigest;
  return { name: noTag.slice(lastSlash + 1), tag };
}

const ROOT_PASSWD =
  'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n';
const ROOT_GROUP = 'root:x:0:\nnogroup:x:65534:\n';

const redisRuntime: ImageRuntime = {
  argv(command, args) {
    // The official image: ENTRYPOINT docker-entrypoint.sh, CMD redis-server; the entrypoint
    // prepends redis-server when the first argument is an option or a .conf file.
    let argv = command?.length ? [...command, ...(args ?? [])] : args?.length ? [...args] : ['redis-server'];
    if (argv[0] === 'docker-entrypoint.sh') argv = argv.slice(1);
    if (argv.length === 0) argv = ['redis-server'];
    if (argv[0]!.startsWith('-') || argv[0]!.endsWith('.conf')) argv = ['redis-server', ...argv];
    const bin = argv[0]!.split('/').pop();
    if (bin !== 'redis-server') throw new UnsupportedImage(`redis image: cannot run ${argv[0]}`);
    return [tool('redis-server'), ...argv.slice(1)];
  },
  networkArgs: (ip) => ['--bind', ip, '--bind-source-addr', ip],
  extraPorts: (ports) => ports.map((p) => p + 10000).filter((p) => p <= 65535),
  // The tools (redis-cli for exec probes), then the host's. The tool's real directory, not
  // .tools/bin: the container's user may not be able to enter the checkout.
  get path() {
    return `${dirname(tool('redis-cli'))}:${process.env.PATH ?? '/usr/bin:/bin'}`;
  },
  passwd: `${ROOT_PASSWD}redis:x:999:999::/home/redis:/bin/sh\n`,
  group: `${ROOT_GROUP}redis:x:999:\n`,
};

/**
 * The official postgres image, run by its binaries from the host's PostgreSQL of the tag's
 * major version (Debian's layout: /usr/lib/postgresql/<major>/bin). Only with an explicit
 * command: docker-entrypoint.sh (initdb as root, then gosu) is not emulated; the container's
 * own script does what it needs. The process listens where its own configuration says.
 */
function postgresRuntime(tag: string): ImageRuntime {
  const major = /^(\d+)/.exec(tag)?.[1];
  if (!major) throw new UnsupportedImage(`postgres image: name a major version in the tag (got ${tag})`);
  const bin = `/usr/lib/postgresql/${major}/bin`;
  if (!existsSync(`${bin}/postgres`))
    throw new UnsupportedImage(
      `postgres:${tag}: PostgreSQL ${major} is not installed at ${bin} (make tools)`,
    );
  return {
    argv(command, args) {
      const entrypoint =
        'the image entrypoint (docker-entrypoint.sh) is not emulated: give the container a command';
      if (command?.length) {
        if (command[0]!.split('/').pop() === 'docker-entrypoint.sh') throw new UnsupportedImage(entrypoint);
        return [...command, ...(args ?? [])];
      }
      // ENTRYPOINT docker-entrypoint.sh execs its arguments unless they are postgres or options.
      if (!args?.length || args[0] === 'postgres' || args[0]!.startsWith('-'))
        throw new UnsupportedImage(entrypoint);
      return [...args];
    },
    networkArgs: () => [],
    extraPorts: () => [],
    path: `${bin}:/usr/local/bin:/usr/bin:/bin`,
    passwd: `${ROOT_PASSWD}postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n`,
    group: `${ROOT_GROUP}postgres:x:999:\n`,
  };
}

export function runtimeFor(image: string): ImageRuntime {
  const { name, tag } = parseImage(image);
  if (name === 'redis') return redisRuntime;
  if (name === 'postgres') return postgresRuntime(tag);
  throw new UnsupportedImage(`the kubelet stand-in has no runtime for image ${image}`);
}
