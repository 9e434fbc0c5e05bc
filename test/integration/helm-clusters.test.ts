import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { PostgresCluster, RedisCluster } from '../../common/resources/types.gen.js';
import { validateResource } from '../../common/resources/validate.js';
import * as pgDesired from '../../operator/postgres/desired.js';
import * as redisDesired from '../../operator/redis/desired.js';
import { loadSettings } from '../../sidecar/settings/settings.js';
import { repoRoot } from '../harness/tools.js';
import {
  type Container,
  containerEnv,
  type DeploymentSpec,
  find,
  type K8sObject,
  NAMESPACE,
  ofComponent,
  type PodSpec,
  render,
  renderFails,
  valuesFile,
} from './helm-render.js';

/**
 * charts/nox with redisCluster.enabled / postgresCluster.enabled: the RedisCluster and
 * PostgresCluster it creates are valid resources, and the sidecar's settings point at the
 * Secrets and Services the operator makes for them (computed here by the operator's own pure
 * functions, operator/*\/desired.ts, from the rendered resources), by reference only. Also the
 * schema of every value.
 */

const chartDir = join(repoRoot, 'charts', 'nox');
const both = ['--set', 'redisCluster.enabled=true', '--set', 'postgresCluster.enabled=true'];

function authz(objects: K8sObject[]): { pod: PodSpec; container: Container } {
  const spec = find(objects, 'Deployment', 'demo-nox-authz').spec as unknown as DeploymentSpec;
  return { pod: spec.template.spec, container: spec.template.spec.containers[0]! };
}

/** The resource as the API server stores it: validated against its CRD schema and CEL rules, defaults applied. */
function admitted<T>(o: K8sObject): T {
  const v = validateResource(o);
  expect(v.ok, JSON.stringify(v)).toBe(true);
  const object = (v as { object: K8sObject }).object;
  return { ...object, metadata: { ...object.metadata, uid: `uid-of-${o.metadata.name}` } } as T;
}

describe('charts/nox: RedisCluster and PostgresCluster wired into the sidecar', () => {
  it('creates neither by default; the stores stay in memory and no database is set', async () => {
    const objects = await render('demo');
    expect(objects.filter((o) => ['RedisCluster', 'PostgresCluster'].includes(o.kind))).toEqual([]);
    const env = containerEnv(objects, authz(objects).container);
    expect(loadSettings(env)).toMatchObject({
      quotaStore: 'memory',
      sessionStore: 'memory',
      redisNodes: [],
      databaseUrl: '',
    });
  });

  it('creates both as valid resources, with the spec from values', async () => {
    const objects = await render('demo', both);
    const redis = find(objects, 'RedisCluster', 'demo-nox-redis');
    const pg = find(objects, 'PostgresCluster', 'demo-nox-postgres');
    for (const o of [redis, pg]) {
      expect(o.apiVersion).toBe('nox.dev/v1alpha1');
      expect(o.metadata.namespace).toBe(NAMESPACE);
    }
    expect(redis.metadata.labels?.['app.kubernetes.io/component']).toBe('redis');
    expect(pg.metadata.labels?.['app.kubernetes.io/component']).toBe('postgres');
    expect(admitted<RedisCluster>(redis).spec).toMatchObject({ masters: 3, replicasPerMaster: 1 });
    // The chart opts its PostgresCluster into the operator's schema migrations.
    expect(admitted<PostgresCluster>(pg).spec).toMatchObject({ instances: 2, migrations: { enabled: true } });

    const values = {
      redisCluster: {
        enabled: true,
        name: 'quotas',
        spec: { masters: 5, replicasPerMaster: 2, persistence: { appendFsync: 'always' } },
      },
      postgresCluster: {
        enabled: true,
        name: 'audit',
        spec: {
          instances: 3,
          synchronous: { mode: 'Quorum', number: 1 },
          database: { name: 'nox', owner: 'app' },
        },
      },
    };
    const custom = await render('demo', ['-f', valuesFile(values)]);
    // Helm merges values maps: the chart's defaults stay unless overridden (null removes one).
    expect(find(custom, 'RedisCluster', 'quotas').spec).toEqual({
      image: 'redis:7.0',
      storage: { size: '1Gi' },
      ...values.redisCluster.spec,
    });
    expect(find(custom, 'PostgresCluster', 'audit').spec).toEqual({
      image: 'postgres:15',
      storage: { size: '1Gi' },
      migrations: { enabled: true },
      ...values.postgresCluster.spec,
    });
  });

  it('points quotas and sessions at the RedisCluster: its client Service, its password Secret mounted as a file', async () => {
    const objects = await render('demo', both);
    const redis = admitted<RedisCluster>(find(objects, 'RedisCluster', 'demo-nox-redis'));
    // What the operator creates for it (operator/redis/desired.ts).
    const children = redisDesired.desiredChildren(redis, { generatedPassword: 'pw' });
    const client = children.client;
    const secret = children.secret!;

    const { pod, container } = authz(objects);
    const settings = loadSettings(containerEnv(objects, container));
    expect(settings.quotaStore).toBe('redis-cluster');
    expect(settings.sessionStore).toBe('redis-cluster');
    expect(settings.redisNodes).toEqual([
      { host: `${client.metadata!.name}.${NAMESPACE}.svc`, port: client.spec!.ports![0]!.port },
    ]);
    expect(client.spec!.ports![0]!.port).toBe(redisDesired.REDIS_PORT);
    // The password file is the operator's Secret's key, mounted read-only.
    const mount = container.volumeMounts?.find((m) =>
      settings.redisPasswordFile.startsWith(`${m.mountPath}/`),
    );
    expect(mount?.readOnly).toBe(true);
    const volume = pod.volumes?.find((v) => v.name === mount?.name);
    expect(volume?.secret).toEqual({
      secretName: secret.metadata!.name,
      items: [
        {
          key: redisDesired.PASSWORD_KEY,
          path: settings.redisPasswordFile.slice(mount!.mountPath.length + 1),
        },
      ],
    });
    expect(Object.keys(secret.data!)).toContain(redisDesired.PASSWORD_KEY);
    // Every charge waits for one replica, which the default spec has.
    expect(settings.redisWaitReplicas).toBeLessThanOrEqual(redis.spec.replicasPerMaster);
  });

  it('uses the RedisCluster’s own passwordSecretRef, and explicit sidecar values over the defaults', async () => {
    const values = {
      redisCluster: {
        enabled: true,
        spec: { masters: 3, replicasPerMaster: 1, passwordSecretRef: { name: 'my-redis', key: 'secret' } },
      },
    };
    const objects = await render('demo', ['-f', valuesFile(values)]);
    const { pod } = authz(objects);
    expect(pod.volumes?.find((v) => v.secret)?.secret).toEqual({
      secretName: 'my-redis',
      items: [{ key: 'secret', path: 'password' }],
    });
    const own = await render('demo', [
      '--set',
      'redisCluster.enabled=true',
      '--set',
      'sidecar.quotaStore=memory',
      '--set',
      'sidecar.sessionStore=memory',
    ]);
    const settings = loadSettings(containerEnv(own, authz(own).container));
    expect(settings).toMatchObject({ quotaStore: 'memory', sessionStore: 'memory', redisPasswordFile: '' });
    const elsewhere = await render('demo', [
      '--set',
      'redisCluster.enabled=true',
      '--set',
      'sidecar.redisNodes={redis-0.other:6379}',
    ]);
    expect(loadSettings(containerEnv(elsewhere, authz(elsewhere).container)).redisNodes).toEqual([
      { host: 'redis-0.other', port: 6379 },
    ]);
  });

  it('takes the database URL from the PostgresCluster’s application Secret, which holds a usable URL through -rw', async () => {
    const objects = await render('demo', both);
    const pg = admitted<PostgresCluster>(find(objects, 'PostgresCluster', 'demo-nox-postgres'));
    const children = pgDesired.desiredChildren(pg, { superuserPassword: 'su', appPassword: 'p@ss/word' });
    const appSecret = children.appSecret!;

    const { container } = authz(objects);
    const ref = container.env?.find((e) => e.name === 'NOX_DATABASE_URL')?.valueFrom?.secretKeyRef;
    expect(ref).toEqual({ name: appSecret.metadata!.name, key: 'uri' });
    // Never through the ConfigMap.
    expect(find(objects, 'ConfigMap', 'demo-nox-sidecar').data).not.toHaveProperty('NOX_DATABASE_URL');
    // The key holds what the sidecar needs: a URL to the primary, user and password escaped.
    const uri = Buffer.from(appSecret.data![ref!.key]!, 'base64').toString('utf8');
    const url = new URL(uri);
    expect(url.hostname).toBe(`${children.rw.metadata!.name}.${NAMESPACE}.svc`);
    expect(Number(url.port)).toBe(pgDesired.POSTGRES_PORT);
    expect(decodeURIComponent(url.password)).toBe('p@ss/word');
    expect(url.pathname).toBe('/nox');
    expect(loadSettings({ NOX_DATABASE_URL: uri }).databaseUrl).toBe(uri);
  });

  it('refuses what would leave the sidecar unwired, with the value to change', async () => {
    expect(
      await renderFails([
        '--set',
        'postgresCluster.enabled=true',
        '--set',
        'postgresCluster.spec.appSecretRef.name=my-pg',
      ]),
    ).toContain(
      'postgresCluster.spec.appSecretRef: the operator then writes no Secret with the connection string',
    );
    // …unless the URL's Secret is named.
    const named = await render('demo', [
      '--set',
      'postgresCluster.enabled=true',
      '--set',
      'postgresCluster.spec.appSecretRef.name=my-pg',
      '--set',
      'sidecar.databaseUrlSecret.name=my-pg-url',
    ]);
    expect(
      authz(named).container.env?.find((e) => e.name === 'NOX_DATABASE_URL')?.valueFrom?.secretKeyRef,
    ).toEqual({
      name: 'my-pg-url',
      key: 'url',
    });
    expect(
      await renderFails([
        '--set',
        'redisCluster.enabled=true',
        '--set',
        'redisCluster.spec.replicasPerMaster=0',
      ]),
    ).toContain('sidecar.redisWaitReplicas=1 but redisCluster.spec.replicasPerMaster=0');
    const noWait = await render('demo', [
      '--set',
      'redisCluster.enabled=true',
      '--set',
      'redisCluster.spec.replicasPerMaster=0',
      '--set',
      'sidecar.redisWaitReplicas=0',
    ]);
    expect(find(noWait, 'ConfigMap', 'demo-nox-sidecar').data?.NOX_REDIS_WAIT_REPLICAS).toBe('0');
  });

  it('labels them apart from the sidecar and operator objects', async () => {
    const objects = await render('demo', both);
    expect(ofComponent(objects, 'redis').map((o) => o.kind)).toEqual(['RedisCluster']);
    expect(ofComponent(objects, 'postgres').map((o) => o.kind)).toEqual(['PostgresCluster']);
  });
});

describe('charts/nox: values.schema.json', () => {
  const schema = JSON.parse(readFileSync(join(chartDir, 'values.schema.json'), 'utf8'));

  it('covers every value of values.yaml', () => {
    const values = parse(readFileSync(join(chartDir, 'values.yaml'), 'utf8'));
    const missing: string[] = [];
    const walk = (v: unknown, s: Record<string, unknown> | undefined, path: string) => {
      if (!s) return void missing.push(path);
      const props = s.properties as Record<string, Record<string, unknown>> | undefined;
      if (v === null || typeof v !== 'object' || Array.isArray(v) || !props) return;
      for (const [k, child] of Object.entries(v)) walk(child, props[k], path ? `${path}.${k}` : k);
    };
    walk(values, schema, '');
    expect(missing).toEqual([]);
    expect(schema.additionalProperties).toBe(false);
  });

  it('holds the RedisCluster and PostgresCluster specs as their CRDs do, made strict (unknown fields rejected)', () => {
    const strict = (s: unknown): unknown => {
      if (Array.isArray(s)) return s.map(strict);
      if (s === null || typeof s !== 'object') return s;
      const src = s as Record<string, unknown>;
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(src)) if (!k.startsWith('x-kubernetes-')) out[k] = strict(v);
      if (
        out.properties &&
        out.additionalProperties === undefined &&
        !src['x-kubernetes-preserve-unknown-fields']
      )
        out.additionalProperties = false;
      return out;
    };
    for (const [value, plural] of [
      ['redisCluster', 'redisclusters'],
      ['postgresCluster', 'postgresclusters'],
    ]) {
      const crd = parse(readFileSync(join(repoRoot, 'crds', `${plural}.nox.dev.yaml`), 'utf8'));
      const expected = strict(crd.spec.versions[0].schema.openAPIV3Schema.properties.spec);
      // On a CRD change, copy `expected` into values.schema.json's properties.<value>.properties.spec.
      expect(schema.properties[value!].properties.spec, `${value}.spec drifted from crds/${plural}`).toEqual(
        expected,
      );
    }
  });

  it('rejects bad values naming the field', async () => {
    for (const [args, field] of [
      [['--set', 'unknownTopLevel=1'], 'unknownTopLevel'],
      [['--set', 'image.registry=ghcr.io'], 'registry'],
      [['--set', 'authz.replicas=0'], 'replicas'],
      [['--set', 'authz.replica=3'], 'replica'],
      [['--set', 'authz.service.type=Headless'], 'type'],
      [['--set', 'authz.resources.requests.cpu=lots'], 'cpu'],
      [['--set', 'authz.autoscaling.targetCPUUtilizationPercentage=150'], 'targetCPUUtilizationPercentage'],
      [['--set', 'authz.podDisruptionBudget.maxUnavailable=0'], 'maxUnavailable'],
      [['--set-json', 'authz.topologySpreadConstraints=[{"maxSkew":1}]'], 'topologyKey'],
      [['--set', 'authz.preStopSleepSeconds=-1'], 'preStopSleepSeconds'],
      [['--set', 'redisCluster.spec.masters=2'], 'masters'],
      [['--set', 'redisCluster.spec.mastrs=3'], 'mastrs'],
      [['--set', 'redisCluster.name=Bad_Name'], 'name'],
      [['--set', 'postgresCluster.spec.instances=0'], 'instances'],
      [['--set', 'postgresCluster.spec.migrations.enable=true'], 'enable'],
      [['--set', 'postgresCluster.spec.synchronous.mode=Sometimes'], 'mode'],
      [['--set', 'postgresCluster.spec.storage.size=big'], 'size'],
      [['--set', 'tests.check.expect=allow'], 'expect'],
      [['--set', 'sidecar.quotaStore=etcd'], 'quotaStore'],
    ] as const) {
      const stderr = await renderFails([...args]);
      expect(stderr, args.join(' ')).toContain(field);
    }
  });
});
