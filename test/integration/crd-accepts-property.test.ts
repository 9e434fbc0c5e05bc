import type { KubeConfig } from '@kubernetes/client-node';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kinds } from '../../common/resources/kinds/index.js';
import type { OAuth2ProviderSpec, PostgresCluster, RedisCluster } from '../../common/resources/types.gen.js';
import * as pg from '../../operator/postgres/desired.js';
import * as redis from '../../operator/redis/desired.js';
import type { RawResource } from '../../sidecar/config/source.js';
import { resolveProvider } from '../../sidecar/identity/presets.js';
import { durationMs } from '../../sidecar/login/providers.js';
import { compileSnapshot } from '../../sidecar/policy/compile.js';
import { createNamespace, installCrds } from '../harness/crds.js';
import { type Kube, startKube } from '../harness/kube.js';
import { kubeRequest } from '../harness/kubeHttp.js';

/**
 * Whatever the API server accepts, the programs accept too: specs generated from pools of
 * good and tricky values are applied to the real API server (server-side apply, dryRun=All,
 * strict field validation); for each one it accepts, with the defaults it filled in,
 * - a policy kind must compile in the sidecar (compileSnapshot: file validation + compiler);
 * - an OAuth2Provider must also resolve (presets) and its URLs parse as the sidecar parses them;
 * - a RedisCluster or PostgresCluster must pass the operator's validateSpec, and every child
 *   object its desiredChildren computes must be accepted by the same API server (dryRun=All),
 *   so that nothing the cluster accepted is refused when the operator applies it.
 * Runs are bounded (numRuns per kind) to keep the file under a minute on two cores.
 */

const ns = 'property';
/** Runs per kind: a refused spec costs one dry-run request, an accepted cluster about eight. */
const runs = { policy: 300, cluster: 400 };

function plural(kind: string): string {
  return kinds.find((k) => k.kind === kind)!.plural;
}

/** Server-side apply, dry run: what the API server makes of the object, or why it refuses it. */
async function dryRunApply(
  kc: KubeConfig,
  collection: string,
  object: Record<string, unknown>,
): Promise<{ ok: true; object: Record<string, unknown> } | { ok: false; status: number; message: string }> {
  const name = (object.metadata as { name: string }).name;
  const res = await kubeRequest(
    kc,
    'PATCH',
    `${collection}/${encodeURIComponent(name)}?fieldManager=nox-property&fieldValidation=Strict&force=true&dryRun=All`,
    { body: JSON.stringify(object), contentType: 'application/apply-patch+yaml' },
  );
  if (res.status === 200 || res.status === 201)
    return { ok: true, object: res.body as Record<string, unknown> };
  return {
    ok: false,
    status: res.status,
    message: (res.body as { message?: string }).message ?? String(res.body),
  };
}

const collectionOf: Record<string, string> = {
  Secret: `/api/v1/namespaces/${ns}/secrets`,
  ConfigMap: `/api/v1/namespaces/${ns}/configmaps`,
  Service: `/api/v1/namespaces/${ns}/services`,
  StatefulSet: `/apis/apps/v1/namespaces/${ns}/statefulsets`,
  PodDisruptionBudget: `/apis/policy/v1/namespaces/${ns}/poddisruptionbudgets`,
};

// --- pools of values: valid ones, and ones that only look right ---------------------------

const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined, freq: 2 });
/** Mostly values the programs take, sometimes ones that only look right (1 in 5). */
const mostly = <T>(good: readonly T[], bad: readonly T[]) =>
  fc.oneof(
    { arbitrary: fc.constantFrom(...good), weight: 4 },
    { arbitrary: fc.constantFrom(...bad), weight: 1 },
  );
const listOf = <T>(a: fc.Arbitrary<T>, max = 3) => fc.uniqueArray(a, { minLength: 0, maxLength: max });
/** Drops undefined members, as YAML without the key would. */
const compact = (o: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

const segment = mostly(
  ['api', 'admin', 'v1', 'Users', 'a:b', '~u', 'a=b'],
  ['.', '..', '', 'a;b', ';x', 'x y', '%2e', 'ü', 'a\\b'],
);
const path = fc
  .tuple(fc.array(segment, { minLength: 0, maxLength: 4 }), fc.boolean())
  .map(([segs, trailing]) => `/${segs.join('/')}${trailing && segs.length > 0 ? '/' : ''}`);
const pathMatch = fc.record({ type: opt(fc.constantFrom('Prefix', 'Exact')), value: path }).map(compact);
const host = mostly(
  ['api.example.com', '*.example.com', 'example.com:8443', 'localhost'],
  ['API.example.com', 'example.com.', 'a_b.example.com'],
);
const method = mostly(['GET', 'POST', 'DELETE'], ['get', 'PURGE']);
const match = opt(
  fc.record(
    { hosts: listOf(host), paths: fc.array(pathMatch, { maxLength: 2 }), methods: listOf(method) },
    { requiredKeys: [] },
  ),
);
const timeZone = mostly(
  [
    'UTC',
    'Europe/Paris',
    'Asia/Kolkata',
    'Asia/Calcutta',
    'America/Argentina/Buenos_Aires',
    'Etc/GMT+5',
    'EST5EDT',
    'GMT+0',
  ],
  ['Mars/Olympus', 'europe/paris', 'posix/Europe/Paris', 'Factory'],
);
const headerName = mostly(['x-api-key', 'X-Tenant', 'authorization'], ['x api key', 'x-ü', '']);

const window = fc.oneof(
  mostly(
    ['1s', '90s', '1h', '1d', '52w', '366d', '8784h', '527040m'],
    ['367d', '53w', '9000h', '0s', '1h30m'],
  ),
  fc
    .tuple(fc.integer({ min: 1, max: 999_999 }), fc.constantFrom('s', 'm', 'h', 'd', 'w'))
    .map(([n, u]) => `${n}${u}`),
);
const limit = fc.oneof(
  fc
    .record({
      name: opt(mostly(['1h', 'day', 'burst'], ['Burst'])),
      requests: fc.integer({ min: 0, max: 1000 }),
      window,
    })
    .map(compact),
  fc
    .record({
      name: opt(fc.constantFrom('day', 'month')),
      requests: fc.integer({ min: 1, max: 1000 }),
      calendar: fc.constantFrom('Day', 'Week', 'Month', 'Year'),
    })
    .map(compact),
);
const quotaPolicy = fc
  .record({
    tiers: fc.uniqueArray(
      fc.record({
        name: fc.constantFrom('free', 'pro'),
        limits: fc.array(limit, { minLength: 1, maxLength: 3 }),
      }),
      { minLength: 1, maxLength: 2, selector: (t) => t.name },
    ),
    timeZone: opt(timeZone),
    match,
    subject: opt(
      fc.array(
        fc.oneof(
          fc.record({ type: fc.constantFrom('User', 'Client', 'SourceIP') }),
          fc.record({ type: fc.constantFrom('ApiKey', 'Header'), name: headerName }),
          fc.record({ type: fc.constant('Claim'), name: fc.constantFrom('tenant', 'org.id') }),
        ),
        { minLength: 1, maxLength: 2 },
      ),
    ),
    costs: opt(
      fc.array(
        fc.record({
          match: fc.record({ paths: fc.array(pathMatch, { minLength: 1, maxLength: 1 }) }),
          cost: fc.integer({ min: 1, max: 5 }),
        }),
        { maxLength: 2 },
      ),
    ),
  })
  .map((spec) => ({ ...compact(spec), defaultTier: spec.tiers[0]!.name }));

const cidr = mostly(
  [
    '10.0.0.0/8',
    '10.0.0.1/8',
    '0.0.0.0/0',
    '192.168.1.1/32',
    '::/0',
    '::1/128',
    '2001:db8::/32',
    'fe80::/10',
  ],
  [
    '300.1.1.0/24',
    '10.0.0.0/33',
    '10.0.0.0/08',
    '01.2.3.4/8',
    '::ffff:10.0.0.0/104',
    '2001:db8:::1/64',
    '::/129',
    '1:2:3:4:5:6:7:8:9/64',
  ],
);
const clock = mostly(['00:00', '09:00', '17:30', '23:59'], ['24:00', '9:00']);
const when = fc.record(
  {
    groups: listOf(mostly(['admins', 'dev'], [''])),
    subjects: listOf(fc.constantFrom('google:123', 'alice@example.com')),
    scopes: listOf(fc.constantFrom('read', 'write')),
    methods: listOf(method),
    paths: fc.array(pathMatch, { maxLength: 2 }),
    hosts: listOf(host),
    sourceCIDRs: listOf(cidr),
    claims: fc.array(
      fc.oneof(
        fc.record({
          name: fc.constant('tier'),
          operator: fc.constantFrom('In', 'NotIn'),
          values: listOf(fc.constantFrom('gold', 'silver')),
        }),
        fc.record({ name: fc.constant('tier'), operator: fc.constantFrom('Exists', 'DoesNotExist') }),
      ),
      { maxLength: 2 },
    ),
    schedule: fc
      .record({
        timeZone: opt(timeZone),
        start: clock,
        end: clock,
        days: opt(listOf(mostly(['Mon', 'Sun'], ['Xyz']))),
      })
      .map(compact),
  },
  { requiredKeys: [] },
);
const accessPolicy = fc
  .record({
    match,
    rules: fc.uniqueArray(
      fc
        .record({
          name: fc.constantFrom('a', 'b', 'c'),
          action: fc.constantFrom('Allow', 'Deny', 'Challenge'),
          when: opt(when),
        })
        .map(compact),
      { maxLength: 3, selector: (r) => r.name },
    ),
    defaultAction: opt(fc.constantFrom('Allow', 'Deny')),
    identityHeaders: opt(
      fc
        .record({ claims: opt(fc.dictionary(headerName, fc.constantFrom('sub', 'org.id'), { maxKeys: 2 })) })
        .map(compact),
    ),
    apiKeys: opt(
      fc.record({
        selector: fc.dictionary(
          mostly(['team', 'nox.dev/api-key'], ['team name', 'a/b/c']),
          mostly(['payments', ''], ['pay ments', '-x']),
          { minKeys: 1, maxKeys: 2 },
        ),
      }),
    ),
  })
  .map(compact);

const url = fc
  .tuple(
    mostly(['https://', 'http://'], ['HTTPS://']),
    mostly(
      [
        'sso.example.com',
        '127.0.0.1',
        'localhost',
        '[::1]',
        '10.0.0.1',
        'localhost.example.com',
        'xn--ls8h.example',
      ],
      ['sso.example.123', 'a..b'],
    ),
    mostly(['', ':443', ':8443', ':65535', ':0'], [':65536', ':99999']),
    mostly(['', '/', '/realms/corp', '/{tenantid}/v2.0', '/?q=1'], ['/a b', '/#x']),
  )
  .map((p) => p.join(''));
const oauth2Provider = fc
  .record({
    base: fc.oneof(
      fc.record({ type: fc.constant('oidc'), clientId: fc.constant('nox'), issuer: url }),
      fc.record({ type: fc.constant('google'), clientId: fc.constant('nox') }),
      fc.record({
        type: fc.constant('microsoft'),
        clientId: fc.constant('nox'),
        tenant: mostly(
          ['contoso.onmicrosoft.com', 'common', '00000000-0000-0000-0000-000000000000'],
          ['contoso/../x'],
        ),
      }),
      fc.record({
        type: fc.constant('github'),
        clientId: fc.constant('nox'),
        github: opt(
          fc.record(
            {
              organizations: listOf(mostly(['example-org'], ['bad org'])),
              teams: listOf(fc.constantFrom('example-org/team')),
            },
            { requiredKeys: [] },
          ),
        ),
      }),
    ),
    clockSkew: opt(
      mostly(['60s', '5m', '300s', '500ms', '1m30s', '0s'], ['301s', '4m61s', '1d', '1w', '1h']),
    ),
    scopes: opt(listOf(mostly(['openid', 'email', 'read:user'], ['openid email', 'a"b']))),
    endpoints: opt(fc.record({ jwks: url, token: url }, { requiredKeys: [] })),
    login: opt(
      fc
        .record({
          enabled: fc.boolean(),
          callbackPath: path,
          logoutPath: opt(path),
          sessionTTL: opt(fc.constantFrom('12h', '1d', '90s', '1h30m')),
          cookie: opt(
            fc
              .record({
                domain: opt(
                  mostly(['example.com', '.example.com', ''], ['example.com; Secure', 'Example.com']),
                ),
              })
              .map(compact),
          ),
          encryptionKeySecretRef: fc.constant({ name: 'session-key' }),
        })
        .map(compact),
    ),
  })
  .map(({ base, ...rest }) => compact({ ...base, ...rest }));

const quantity = mostly<number | string>(
  [1, 0, 2, '100m', '0.5', '1.5Gi', '256Mi', '.5', '1Ki', '999999999999999Ei', '0.000000001', '1n'],
  [-1, '-1Gi', '1.2.3', '1GB', '1e3', '+1'],
);
const resources = opt(
  fc.record(
    {
      requests: fc.dictionary(mostly(['cpu', 'memory', 'ephemeral-storage'], ['cpus']), quantity, {
        maxKeys: 2,
      }),
      limits: fc.dictionary(fc.constantFrom('cpu', 'memory'), quantity, { maxKeys: 2 }),
    },
    { requiredKeys: [] },
  ),
);
const storage = opt(
  fc
    .record({
      size: opt(mostly(['1Gi', '500Mi', '10', '1.5Ti'], ['0', '0Gi', '-1Gi'])),
      storageClassName: opt(mostly(['', 'fast', 'fast-ssd.example.com'], ['Fast SSD'])),
    })
    .map(compact),
);
const nodeSelector = opt(
  fc.dictionary(
    mostly(['disktype', 'kubernetes.io/arch'], ['disk type']),
    mostly(['ssd', 'amd64', ''], ['ssd fast', 'x'.repeat(64)]),
    { maxKeys: 2 },
  ),
);
const toleration = fc.record(
  {
    key: mostly(['', 'dedicated', 'node.kubernetes.io/unreachable'], ['bad key']),
    operator: fc.constantFrom('Exists', 'Equal'),
    value: mostly(['', 'redis'], ['bad value']),
    effect: fc.constantFrom('', 'NoSchedule', 'NoExecute'),
    tolerationSeconds: fc.integer({ min: -5, max: 300 }),
  },
  { requiredKeys: [] },
);
const image = opt(
  mostly(
    ['redis:7.0', 'postgres:15', `registry.example.com:5000/redis@sha256:${'a'.repeat(64)}`],
    ['redis 7', ' redis'],
  ),
);
const clusterName = mostly(['main', 'db1', 'x'.repeat(52)], ['x'.repeat(53), '1main', 'main.db']);

const redisSpec = fc
  .record({
    masters: fc.integer({ min: 2, max: 4 }),
    replicasPerMaster: fc.integer({ min: 0, max: 1 }),
    config: opt(
      fc.dictionary(
        mostly(
          ['maxmemory-policy', 'hz', 'maxmemory'],
          ['PORT', 'Port', 'cluster-enabled', 'bad name', 'x_y'],
        ),
        mostly(['allkeys-lru', '100mb', 'yes', '"q"', '', '10'], ['a\nb', 'x\ry']),
        { maxKeys: 2 },
      ),
    ),
    resources,
    storage,
    nodeSelector,
    tolerations: opt(fc.array(toleration, { maxLength: 2 })),
    image,
  })
  .map(compact);

const postgresSpec = (name: string) =>
  fc
    .record({
      instances: fc.integer({ min: 1, max: 4 }),
      synchronous: opt(
        fc.record({
          mode: fc.constantFrom('Off', 'Quorum', 'First'),
          number: fc.integer({ min: 1, max: 3 }),
        }),
      ),
      failover: opt(
        fc.record({ delay: mostly(['5s', '1s', '1m30s', '1000ms'], ['999ms', '500ms', '1d', '0s']) }),
      ),
      switchoverTo: opt(mostly([`${name}-0`, `${name}-1`], [`${name}-3`, 'other-0', `${name}-01`])),
      database: opt(
        fc
          .record({
            name: opt(mostly(['nox', 'app_db'], ['postgres', 'template1'])),
            owner: opt(mostly(['nox', 'app'], ['postgres', 'pg_monitor'])),
          })
          .map(compact),
      ),
      superuserSecretRef: opt(fc.constantFrom({ name: 'pw', key: 'password' }, { name: 'pw', key: 'su' })),
      appSecretRef: opt(
        mostly(
          [{ name: 'pw', key: 'app' }],
          [
            { name: 'pw', key: 'password' },
            { name: 'pw', key: 'app key' },
          ],
        ),
      ),
      parameters: opt(
        fc.dictionary(
          mostly(
            [
              'work_mem',
              'max_wal_senders',
              'max_replication_slots',
              'pg_stat_statements.track',
              'shared_buffers',
            ],
            ['WAL_LEVEL', 'password_encryption', 'a-b'],
          ),
          mostly(['4MB', '1', '3', '4', '5', '10', "it's"], [' 5', 'ten', 'a\nb', 'x\u0000']),
          { maxKeys: 3 },
        ),
      ),
      resources,
      storage,
      nodeSelector,
      image,
    })
    .map(compact);

describe('whatever the API server accepts, the sidecar and the operator accept', () => {
  let kube: Kube;
  let kc: KubeConfig;
  const tally = new Map<string, { accepted: number; refused: number }>();
  const count = (kind: string, accepted: boolean) => {
    const t = tally.get(kind) ?? { accepted: 0, refused: 0 };
    if (accepted) t.accepted++;
    else t.refused++;
    tally.set(kind, t);
  };

  beforeAll(async () => {
    kube = await startKube();
    kc = kube.kubeConfig();
    await installCrds(kc);
    await createNamespace(kc, ns);
  });
  afterAll(async () => {
    console.log('accepted/refused by the API server:', JSON.stringify(Object.fromEntries(tally)));
    await kube?.stop();
  });

  async function applyPolicy(kind: string, spec: Record<string, unknown>) {
    const object = { apiVersion: 'nox.dev/v1alpha1', kind, metadata: { name: 'p', namespace: ns }, spec };
    const res = await dryRunApply(kc, `/apis/nox.dev/v1alpha1/namespaces/${ns}/${plural(kind)}`, object);
    count(kind, res.ok);
    if (!res.ok) {
      // A refusal must be a schema or rule error naming a field, never a rule that broke.
      expect(res.message, res.message).not.toMatch(/evaluating rule|no such overload|cost limit/i);
      return undefined;
    }
    const snap = compileSnapshot(
      { resources: [{ ...(res.object as unknown as RawResource), origin: 'k8s' }], problems: [] },
      undefined,
      1,
    );
    expect(snap.rejected, `${JSON.stringify(spec)} accepted by the API server`).toEqual([]);
    return res.object;
  }

  it('QuotaPolicy: compiles', async () => {
    await fc.assert(
      fc.asyncProperty(quotaPolicy, async (spec) => {
        await applyPolicy('QuotaPolicy', spec);
      }),
      { numRuns: runs.policy },
    );
  });

  it('AccessPolicy: compiles', async () => {
    await fc.assert(
      fc.asyncProperty(accessPolicy, async (spec) => {
        await applyPolicy('AccessPolicy', spec);
      }),
      { numRuns: runs.policy },
    );
  });

  it('OAuth2Provider: compiles, resolves, and its URLs parse as the sidecar parses them', async () => {
    const loopback = new Set(['127.0.0.1', 'localhost', '[::1]']);
    await fc.assert(
      fc.asyncProperty(oauth2Provider, async (spec) => {
        const object = await applyPolicy('OAuth2Provider', spec);
        if (!object) return;
        const s = object.spec as OAuth2ProviderSpec;
        const resolved = resolveProvider(`${ns}/p`, s);
        expect(resolved.clockToleranceS).toBeLessThanOrEqual(300);
        for (const u of [s.issuer, ...Object.values(s.endpoints ?? {})]) {
          if (u === undefined) continue;
          expect(() => new URL(u), u).not.toThrow();
        }
        if (s.login?.enabled && s.issuer) {
          // sidecar/login/discovery.ts: plain HTTP only to a provider on this host.
          const issuer = new URL(s.issuer);
          expect(issuer.protocol === 'https:' || loopback.has(issuer.hostname), s.issuer).toBe(true);
        }
        if (s.login) {
          expect(durationMs(s.login.sessionTTL)).toBeGreaterThan(0);
          for (const p of [s.login.callbackPath, s.login.logoutPath]) {
            if (p === undefined) continue;
            // A login path must be one a normalized request path can equal.
            expect(p.split('/').slice(1, p.endsWith('/') ? -1 : undefined)).not.toContain('..');
          }
        }
      }),
      { numRuns: runs.policy },
    );
  });

  async function applyChildren(children: readonly Record<string, unknown>[], owner: string) {
    for (const child of children) {
      const kind = child.kind as string;
      const res = await dryRunApply(kc, collectionOf[kind]!, child);
      expect(res.ok, `${kind} of ${owner}: ${res.ok ? '' : res.message}`).toBe(true);
    }
  }

  it('RedisCluster: passes validateSpec, and every child object is accepted', async () => {
    await fc.assert(
      fc.asyncProperty(clusterName, redisSpec, async (name, spec) => {
        const object = {
          apiVersion: 'nox.dev/v1alpha1',
          kind: 'RedisCluster',
          metadata: { name, namespace: ns },
          spec,
        };
        const res = await dryRunApply(kc, `/apis/nox.dev/v1alpha1/namespaces/${ns}/redisclusters`, object);
        count('RedisCluster', res.ok);
        if (!res.ok) {
          expect(res.message).not.toMatch(/evaluating rule|no such overload|cost limit/i);
          return;
        }
        const cluster = res.object as unknown as RedisCluster;
        cluster.metadata.uid = '00000000-0000-0000-0000-000000000001';
        expect(redis.validateSpec(cluster.spec), JSON.stringify(spec)).toEqual([]);
        const children = redis.childList(redis.desiredChildren(cluster, { generatedPassword: 'pw' }));
        await applyChildren(children as unknown as Record<string, unknown>[], JSON.stringify({ name, spec }));
      }),
      { numRuns: runs.cluster },
    );
  });

  it('PostgresCluster: passes validateSpec, and every child object is accepted', async () => {
    await fc.assert(
      fc.asyncProperty(
        clusterName.chain((name) => fc.tuple(fc.constant(name), postgresSpec(name))),
        async ([name, spec]) => {
          const object = {
            apiVersion: 'nox.dev/v1alpha1',
            kind: 'PostgresCluster',
            metadata: { name, namespace: ns },
            spec,
          };
          const res = await dryRunApply(
            kc,
            `/apis/nox.dev/v1alpha1/namespaces/${ns}/postgresclusters`,
            object,
          );
          count('PostgresCluster', res.ok);
          if (!res.ok) {
            expect(res.message).not.toMatch(/evaluating rule|no such overload|cost limit/i);
            return;
          }
          const cluster = res.object as unknown as PostgresCluster;
          cluster.metadata.uid = '00000000-0000-0000-0000-000000000002';
          expect(pg.validateSpec(cluster.spec, name), JSON.stringify(spec)).toEqual([]);
          const children = pg.childList(
            pg.desiredChildren(cluster, { superuserPassword: 'su', appPassword: 'app' }),
          );
          await applyChildren(
            children as unknown as Record<string, unknown>[],
            JSON.stringify({ name, spec }),
          );
        },
      ),
      { numRuns: runs.cluster },
    );
  });

  it('generated specs fall on both sides of the line (the property is not vacuous)', () => {
    for (const kind of ['QuotaPolicy', 'AccessPolicy', 'OAuth2Provider', 'RedisCluster', 'PostgresCluster']) {
      const t = tally.get(kind);
      expect(t?.accepted, `${kind} accepted`).toBeGreaterThan(0);
      expect(t?.refused, `${kind} refused`).toBeGreaterThan(0);
    }
  });
});
