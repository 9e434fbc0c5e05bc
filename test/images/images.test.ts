import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Container } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresCluster, RedisCluster } from '../../common/resources/types.gen.js';
import { desiredChildren as postgresChildren } from '../../operator/postgres/desired.js';
import { BOOTSTRAP_ANNOTATION } from '../../operator/postgres/instanceManager.js';
import { desiredChildren as redisChildren } from '../../operator/redis/desired.js';
import { testLog } from '../harness/log.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { seeded } from '../harness/random.js';
import {
  type Bundle,
  buildImages,
  type Container,
  type ImageEntry,
  type ImageIndex,
  runToEnd,
  startContainer,
  unpack,
  volumeDir,
} from './containers.js';

/**
 * The images built from images/*\/Dockerfile really run, as a pod would run them: read-only
 * root filesystem, the pod's user, the operator's own command lines, environment and volumes
 * for Redis and PostgreSQL (taken from the operator's desired StatefulSets, not copied), probes
 * run inside the container.
 */

let index: ImageIndex;
let work: string;
const bundles = new Map<string, Bundle>();
const running: Container[] = [];

function image(name: string): ImageEntry {
  const found = index.images.find((i) => i.name === name);
  if (!found) throw new Error(`no image ${name} in .run/images/index.json`);
  return found;
}

async function bundle(name: string): Promise<Bundle> {
  let b = bundles.get(name);
  if (!b) {
    const t = Date.now();
    b = await unpack(image(name), work);
    testLog(`images: unpacked ${name} in ${Date.now() - t} ms`);
    bundles.set(name, b);
  }
  return b;
}

/** A container's env as the kubelet resolves it: values, with valueFrom given by the test. */
function podEnv(c: V1Container, from: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    const v = e.value ?? from[e.name];
    if (v === undefined) throw new Error(`the test gives no value for ${e.name}`);
    env[e.name] = v;
  }
  return env;
}

/** $(VAR) in command and args, expanded from the container's env as the kubelet does. */
function expand(args: readonly string[], env: Record<string, string>): string[] {
  return args.map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, k: string) => env[k] ?? m));
}

beforeAll(async () => {
  const t = Date.now();
  index = await buildImages();
  testLog(`images: scripts/images.sh took ${Date.now() - t} ms`, index.steps);
  work = scratchDir('images');
}, 1_800_000);

afterAll(async () => {
  for (const c of running.splice(0)) await c.stop();
});

describe('index', () => {
  it('lists the four images with their refs and archives', () => {
    expect(index.images.map((i) => [i.name, i.ref])).toEqual([
      ['nox', 'localhost/nox:dev'],
      ['redis', 'localhost/nox-redis:7'],
      ['postgres', 'localhost/nox-postgres:15'],
      ['trainer', 'localhost/nox-trainer:dev'],
    ]);
    for (const i of index.images) expect(i.archive).toMatch(/\.tar$/);
  });
});

describe('nox image', () => {
  it('runs as a non-root numeric user with `nox authz` as its default command', async () => {
    const b = await bundle('nox');
    expect(b.config.process.user.uid).toBe(65532);
    expect(b.config.process.args).toEqual(['node', '/app/images/nox/bin/nox.mjs', 'authz']);
  });

  it('authz: serves /healthz and becomes ready on a policy file, read-only root', async () => {
    const b = await bundle('nox');
    const policies = volumeDir(join(work, 'policies'));
    writeFileSync(
      join(policies, 'open.yaml'),
      'apiVersion: nox.dev/v1alpha1\nkind: AccessPolicy\nmetadata: { name: open }\nspec:\n  rules: [{ name: everyone, action: Allow }]\n',
    );
    const c = startContainer('authz', b, {
      env: { NOX_POLICY_PATH: '/etc/nox/policies', NOX_HTTP_HOST: '127.0.0.1' },
      volumes: { '/etc/nox/policies': { source: policies, readOnly: true } },
    });
    running.push(c);
    // The probe a kubelet would send, from inside the pod's network namespace.
    const get = (path: string) =>
      c.exec([
        'node',
        '-e',
        `fetch('http://127.0.0.1:9002${path}').then(async r => { process.stdout.write(r.status + ' ' + await r.text()); })`,
      ]);
    let ready = '';
    const ms = await waitUntil(
      'the sidecar container to be ready',
      async () => {
        ready = (await get('/readyz')).stdout;
        return ready.startsWith('200 ');
      },
      30_000,
      c.service,
    );
    testLog(`images: authz ready in ${ms} ms`);
    expect(JSON.parse(ready.slice(4))).toMatchObject({ status: 'ready' });
    const live = await get('/healthz');
    expect(live.stdout).toMatch(/^200 /);
    expect(JSON.parse(live.stdout.slice(4))).toMatchObject({ status: 'ok' });
  });

  it('operator: prints its settings, and refuses a bad one with exit code 2', async () => {
    const b = await bundle('nox');
    const entry = b.config.process.args.slice(0, -1);
    const help = await runToEnd(b, { args: [...entry, 'operator', '--help'] });
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('nox-operator');
    expect(help.stdout).toContain('NOX_KUBECONFIG');
    const bad = await runToEnd(b, { args: [...entry, 'operator'], env: { NOX_HTTP_PORT: 'x' } });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('NOX_HTTP_PORT');
  });

  it('admin: prints its settings, and refuses to start without a database', async () => {
    const b = await bundle('nox');
    const entry = b.config.process.args.slice(0, -1);
    const help = await runToEnd(b, { args: [...entry, 'admin', '--help'] });
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('nox-admin');
    expect(help.stdout).toContain('NOX_DATABASE_READ_URL');
    const bad = await runToEnd(b, { args: [...entry, 'admin'] });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('NOX_DATABASE_URL');
  });

  it('an unknown program is a usage error', async () => {
    const b = await bundle('nox');
    const r = await runToEnd(b, { args: [...b.config.process.args.slice(0, -1), 'nope'] });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('usage: nox <program>');
  });
});

describe('trainer image', () => {
  it('trains a model from feature vectors as a non-root user on a read-only root, and says so in JSON', async () => {
    const b = await bundle('trainer');
    expect(b.config.process.user.uid).toBe(65532);
    const user = { uid: 65532, gid: 65532 };
    const input = volumeDir(join(work, 'trainer-in'));
    const out = volumeDir(join(work, 'trainer-out'), user);
    const { next } = seeded(5);
    writeFileSync(
      join(input, 'vectors.ndjson'),
      Array.from({ length: 1200 }, (_, i) =>
        JSON.stringify({
          at: 1_700_000_000 + i * 60,
          features: { subjectRate1m: 1 + Math.floor(next() * 20), writeMethod: next() < 0.2 ? 1 : 0 },
        }),
      ).join('\n'),
    );
    const r = await runToEnd(b, {
      args: [
        ...b.config.process.args,
        '--vectors',
        '/in/vectors.ndjson',
        '--features',
        'subjectRate1m,writeMethod',
        '--min-events',
        '500',
        '--holdout-hours',
        '4',
        '--out',
        '/out/model.onnx',
      ],
      user,
      volumes: { '/in': { source: input, readOnly: true }, '/out': { source: out } },
    });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { result: string; sha256: string; train: number; holdout: number };
    expect(report.result).toBe('Trained');
    expect([report.train + report.holdout, report.holdout > 200]).toEqual([1200, true]);
    expect(
      createHash('sha256')
        .update(readFileSync(join(out, 'model.onnx')))
        .digest('hex'),
    ).toBe(report.sha256);
  });
});

describe('redis image', () => {
  it("answers PING under the operator's command, args, env, user and volumes", async () => {
    const b = await bundle('redis');
    const cluster: RedisCluster = {
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'RedisCluster',
      metadata: { name: 'quota', namespace: 'nox', uid: 'u-1', generation: 1 },
      spec: { masters: 3, replicasPerMaster: 0, image: image('redis').ref },
    };
    const password = randomBytes(12).toString('hex');
    const children = redisChildren(cluster, { generatedPassword: password });
    const pod = children.statefulSet.spec!.template.spec!;
    const container = pod.containers[0]!;
    const user = { uid: pod.securityContext!.runAsUser!, gid: pod.securityContext!.runAsGroup! };
    expect(user).toEqual({ uid: 999, gid: 999 });
    const config = volumeDir(join(work, 'redis-config'));
    writeFileSync(join(config, 'redis.conf'), children.configMap.data!['redis.conf']!);
    const env = podEnv(container, { POD_IP: '127.0.0.1', REDIS_PASSWORD: password });
    const c = startContainer('redis', b, {
      args: expand([...container.command!, ...container.args!], env),
      env,
      user,
      volumes: {
        '/etc/redis': { source: config, readOnly: true },
        '/data': { source: volumeDir(join(work, 'redis-data'), user) },
      },
    });
    running.push(c);
    const probe = container.readinessProbe!.exec!.command!;
    const ms = await waitUntil(
      "the operator's readiness probe to pass in the redis container",
      async () => (await c.exec(probe)).code === 0,
      30_000,
      c.service,
    );
    testLog(`images: redis ready in ${ms} ms`);
    const info = await c.exec(['redis-cli', '-h', '127.0.0.1', 'CLUSTER', 'INFO'], {
      env: { REDISCLI_AUTH: password },
    });
    expect(info.stdout).toContain('cluster_state:fail'); // cluster mode on; slots not yet assigned
    const version = await c.exec(['redis-server', '--version']);
    expect(version.stdout).toMatch(/ v=7\./);
  });
});

describe('postgres image', () => {
  it("initialises and serves a primary under the operator's instance manager", async () => {
    const b = await bundle('postgres');
    const cluster: PostgresCluster = {
      apiVersion: 'nox.dev/v1alpha1',
      kind: 'PostgresCluster',
      metadata: { name: 'audit', namespace: 'nox', uid: 'u-2', generation: 1 },
      spec: { instances: 1, image: image('postgres').ref },
    };
    const superuserPassword = randomBytes(12).toString('hex');
    const appPassword = randomBytes(12).toString('hex');
    const children = postgresChildren(cluster, { superuserPassword, appPassword });
    const pod = children.statefulSet.spec!.template.spec!;
    const container = pod.containers[0]!;
    const user = { uid: pod.securityContext!.runAsUser!, gid: pod.securityContext!.runAsGroup! };
    expect(user).toEqual({ uid: 999, gid: 999 });
    const config = volumeDir(join(work, 'pg-config'));
    for (const [file, text] of Object.entries(children.configMap.data!))
      writeFileSync(join(config, file), text);
    // The downward API volume: the operator's role label and bootstrap permission.
    const podinfo = volumeDir(join(work, 'pg-podinfo'));
    writeFileSync(join(podinfo, 'labels'), 'nox.dev/role="primary"\n');
    writeFileSync(join(podinfo, 'annotations'), `${BOOTSTRAP_ANNOTATION}="allowed"\n`);
    const env = podEnv(container, {
      POD_NAME: 'audit-0',
      POD_NAMESPACE: 'nox',
      POD_IP: '127.0.0.1',
      POSTGRES_PASSWORD: superuserPassword,
      NOX_APP_PASSWORD: appPassword,
    });
    const mounts = Object.fromEntries(container.volumeMounts!.map((m) => [m.name, m.mountPath]));
    const c = startContainer('postgres', b, {
      args: expand([...container.command!, ...(container.args ?? [])], env),
      env,
      user,
      volumes: {
        [mounts.config!]: { source: config, readOnly: true },
        [mounts.podinfo!]: { source: podinfo, readOnly: true },
        [mounts.data!]: { source: volumeDir(join(work, 'pg-data'), user) },
        [mounts.run!]: { source: volumeDir(join(work, 'pg-run'), user) },
      },
    });
    running.push(c);
    const probe = container.readinessProbe!.exec!.command!;
    const ms = await waitUntil(
      "the operator's readiness probe to pass in the postgres container",
      async () => (await c.exec(probe)).code === 0,
      60_000,
      c.service,
    );
    testLog(`images: postgres bootstrapped and ready in ${ms} ms`);
    // The bootstrap made the application role and database; the app password works over TCP
    // on the pod's address (the probe's socket also answers during the bootstrap's own start).
    let who = '';
    await waitUntil(
      'the application role to reach its database over TCP',
      async () => {
        const r = await c.exec(
          ['psql', '-h', '127.0.0.1', '-U', 'nox', '-d', 'nox', '-tAc', 'select current_user, version()'],
          { env: { PGPASSWORD: appPassword } },
        );
        who = r.stdout;
        return r.code === 0;
      },
      30_000,
      c.service,
    );
    expect(who).toMatch(/^nox\|PostgreSQL 15\./);
  }, 240_000); // initdb and a first start take minutes on a busy 2-core machine

  it('initialises from POSTGRES_PASSWORD and POSTGRES_DB through its entrypoint, as the public image does', async () => {
    const b = await bundle('postgres');
    expect(b.config.process.args).toEqual(['docker-entrypoint.sh', 'postgres']);
    const user = { uid: 999, gid: 999 };
    const password = randomBytes(12).toString('hex');
    const c = startContainer('postgres-entrypoint', b, {
      env: { POSTGRES_PASSWORD: password, POSTGRES_DB: 'app' },
      user,
      volumes: {
        '/var/lib/postgresql/data': { source: volumeDir(join(work, 'pg-entry-data'), user) },
        '/var/run/postgresql': { source: volumeDir(join(work, 'pg-entry-run'), user) },
      },
    });
    running.push(c);
    const sql = () =>
      c.exec(
        ['psql', '-h', '127.0.0.1', '-U', 'postgres', '-d', 'app', '-tAc', 'select current_database()'],
        {
          env: { PGPASSWORD: password },
        },
      );
    await waitUntil(
      'postgres started by docker-entrypoint.sh to accept connections',
      async () => (await c.exec(['pg_isready', '-q', '-h', '127.0.0.1'])).code === 0,
      60_000,
      c.service,
    );
    expect((await sql()).stdout.trim()).toBe('app');
  }, 240_000); // initdb and a first start take minutes on a busy 2-core machine
});
