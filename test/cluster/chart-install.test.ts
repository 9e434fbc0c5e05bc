import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { subjectHash } from '../../sidecar/quota/subject.js';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { helm } from '../harness/helm.js';
import { testLog } from '../harness/log.js';
import { type OidcIssuer, startOidcIssuer } from '../harness/oidc.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { startUpstream, type Upstream } from '../harness/upstream.js';
import { NETWORK } from './addresses.js';
import { builtImages, imageRef, splitRef } from './builtImages.js';
import { startNode, type TestNode } from './node.js';

/**
 * What a user does: `helm install` the chart with a RedisCluster and a PostgresCluster on a
 * real node, from images built from the repository's Dockerfiles; Envoy (on the host) asks the
 * chart's ext_authz Service; then the faults and the upgrade users live through.
 */
const NS = 'nox';
const RELEASE = 'nox';
const MINUTE = 60_000;

interface K8sList<T> {
  items: T[];
}
interface Pod {
  metadata: { name: string; labels?: Record<string, string>; deletionTimestamp?: string };
  status?: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { name: string; ready: boolean; restartCount: number; containerID?: string }[];
  };
}
interface Condition {
  type: string;
  status: string;
  reason?: string;
}
interface RedisClusterObj {
  status?: { nodes?: { pod: string; address: string; role: string }[]; conditions?: Condition[] };
}
interface PostgresClusterObj {
  status?: { currentPrimary?: string; conditions?: Condition[]; schema?: { version?: number } };
}

const ready = (p: Pod) =>
  p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
const condition = (conds: Condition[] | undefined, type: string) => conds?.find((c) => c.type === type);

let node: TestNode;
let issuer: OidcIssuer;
let upstream: Upstream;
let envoy: Envoy;
const tokens: Record<string, string> = {};

async function getJson<T>(args: string[]): Promise<T> {
  return JSON.parse(await node.kubectl([...args, '-o', 'json'])) as T;
}
const pods = async (selector?: string) =>
  (await getJson<K8sList<Pod>>(['-n', NS, 'get', 'pods', ...(selector ? ['-l', selector] : [])])).items;

/** The chart's values for this node: the three local images, a small footprint for 2 cores. */
function values(extra: Record<string, unknown> = {}): string {
  const nox = splitRef(imageRef('nox'));
  const v = {
    image: { ...nox, pullPolicy: 'Never' },
    authz: { replicas: 2 },
    sidecar: {
      // The test is about the system, not latency on a machine shared with the builds (a
      // clean-clone run saw a Redis command take over 1 s under load, right after the failovers).
      checkDeadlineMs: 4000,
      redisTimeoutMs: 2500,
      // Replica acknowledgements on a node whose 2 cores the tests share can take longer than
      // the default 20 ms; a slow ack fails closed by design, which is not what this test is about.
      redisWaitTimeoutMs: 500,
      logLevel: 'info',
    },
    redisCluster: {
      enabled: true,
      spec: { image: imageRef('redis'), masters: 3, replicasPerMaster: 1 },
    },
    postgresCluster: {
      enabled: true,
      spec: { image: imageRef('postgres'), instances: 2 },
    },
    admin: { enabled: true },
    ...extra,
  };
  const file = join(scratchDir('helm-values'), 'values.yaml');
  writeFileSync(file, stringify(v));
  return file;
}

const policies = (iss: string, audience: string) => `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: corp, namespace: ${NS} }
spec:
  type: oidc
  issuer: ${iss}
  clientId: gw
  audiences: [${audience}]
  allowedAlgorithms: [RS256]
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api, namespace: ${NS} }
spec:
  providers: [corp]
  identityHeaders: { user: x-user }
  rules:
    - { name: no-admin, action: Deny, when: { paths: [{ value: /admin }] } }
    - { name: signed-in, action: Allow, when: { authenticated: Authenticated } }
---
apiVersion: nox.dev/v1alpha1
kind: QuotaPolicy
metadata: { name: api-quota, namespace: ${NS} }
spec:
  subject: [{ type: User }]
  defaultTier: small
  tiers:
    - name: small
      limits: [{ name: hourly, requests: 5, window: 1h }]
    - name: big
      limits: [{ name: hourly, requests: 1000000, window: 1h }]
  tierFrom: { claim: tier }
`;

const get = (client: string, path = '/api/items') =>
  fetch(`${envoy.url}${path}`, {
    headers: { authorization: `Bearer ${tokens[client]}` },
    signal: AbortSignal.timeout(10_000),
  });

/** Steady traffic from one caller the policy allows, counting every answer by status. */
function steadyTraffic(client: string): {
  readonly counts: ReadonlyMap<number | string, number>;
  /** The error code in the body of every answer other than 200, counted. */
  readonly denials: ReadonlyMap<string, number>;
  /** The first few such answers, with when they came: for the log when a test fails. */
  readonly samples: readonly { at: string; status: number; body: string }[];
  stop(): Promise<Map<number | string, number>>;
} {
  const counts = new Map<number | string, number>();
  const denials = new Map<string, number>();
  const samples: { at: string; status: number; body: string }[] = [];
  let stopping = false;
  const loop = (async () => {
    while (!stopping) {
      const key = await get(client)
        .then(async (r) => {
          const body = await r.text();
          if (r.status !== 200) {
            if (samples.length < 10) samples.push({ at: new Date().toISOString(), status: r.status, body });
            const code = (() => {
              try {
                return String((JSON.parse(body) as { error?: string }).error);
              } catch {
                return `unparsed: ${body.slice(0, 80)}`;
              }
            })();
            denials.set(code, (denials.get(code) ?? 0) + 1);
          }
          return r.status;
        })
        .catch((e: unknown) => `error: ${(e as Error).message}`);
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  })();
  return {
    counts,
    denials,
    samples,
    async stop() {
      stopping = true;
      await loop;
      return counts;
    },
  };
}

/**
 * The user's part after the install: policies applied with kubectl, and a gateway (Envoy on
 * the host) pointed at the chart's ext_authz Service.
 */
async function applyPoliciesAndGateway(): Promise<void> {
  await node.kubectl(['apply', '-f', '-'], { input: policies(issuer.issuer, issuer.audience) });

  const svc = await getJson<{ spec: { clusterIP: string; ports: { name: string; port: number }[] } }>([
    '-n',
    NS,
    'get',
    'service',
    `${RELEASE}-authz`,
  ]);
  const grpcPort = svc.spec.ports.find((p) => p.name === 'grpc')?.port ?? 9001;
  envoy = await startEnvoy({
    authzHost: svc.spec.clusterIP,
    authzPort: grpcPort,
    upstreamPort: upstream.port,
    authzTimeoutMs: 5000,
  });
  // The policies reach every ext_authz pod through its watch: wait for an allowed request.
  await waitUntil(
    'a signed-in request is allowed',
    async () => (await get('steady')).status === 200,
    2 * MINUTE,
  );
}

describe('helm install on a real node', () => {
  beforeAll(async () => {
    const archives = builtImages().map((i) => i.archive);
    node = await startNode({ images: archives });
    testLog('node started', { ms: node.startMs });
    [issuer, upstream] = await Promise.all([
      startOidcIssuer(
        [
          { clientId: 'alice', secret: 'alice-secret' },
          { clientId: 'steady', secret: 'steady-secret', claims: { tier: 'big' } },
          { clientId: 'bob', secret: 'bob-secret' },
          { clientId: 'carol', secret: 'carol-secret' },
        ],
        'https://api.nox.test',
        { host: NETWORK.hostIp },
      ),
      startUpstream(),
    ]);
    for (const c of ['alice', 'steady', 'bob', 'carol']) tokens[c] = await issuer.token(c);

    const t0 = performance.now();
    const res = await helm(
      [
        'install',
        RELEASE,
        'charts/nox',
        '-n',
        NS,
        '--create-namespace',
        '-f',
        values(),
        '--wait',
        '--timeout',
        '12m',
      ],
      { kubeconfig: node.kubeconfigPath, timeoutMs: 13 * MINUTE },
    );
    if (res.code !== 0) throw new Error(`helm install failed (${res.code}):\n${res.stderr}\n${res.stdout}`);
    testLog('helm install --wait', { ms: Math.round(performance.now() - t0) });
  }, 30 * MINUTE);

  afterAll(async () => {
    await envoy?.stop();
    await upstream?.close();
    await issuer?.close();
    await node?.stop();
  }, 5 * MINUTE);

  it(
    'runs every pod Ready from the repository’s images, and helm test passes',
    async () => {
      // helm --wait covers the chart's own Deployments; the clusters' pods are the operator's
      // StatefulSets, which a user waits for through the clusters' Ready condition.
      const t0 = performance.now();
      await waitUntil(
        'RedisCluster and PostgresCluster Ready, every pod Ready',
        async () => {
          const [rc, pgc, all] = await Promise.all([redisCluster(), postgresCluster(), pods()]);
          return (
            condition(rc.status?.conditions, 'Ready')?.status === 'True' &&
            condition(pgc.status?.conditions, 'Ready')?.status === 'True' &&
            condition(pgc.status?.conditions, 'SchemaMigrated')?.status === 'True' &&
            all.length >= 1 + 2 + 6 + 2 + 1 &&
            all.every(ready)
          );
        },
        10 * MINUTE,
      );
      testLog('clusters Ready after helm install', { ms: Math.round(performance.now() - t0) });
      const all = await pods();
      expect(all.length).toBe(2 + 2 + 6 + 2 + 1); // operator ×2, authz ×2, redis 3+3, postgres ×2, admin
      const refs = new Set(builtImages().map((i) => i.ref));
      const podImages = JSON.parse(
        await node
          .kubectl(['-n', NS, 'get', 'pods', '-o', 'jsonpath={.items[*].spec.containers[*].image}'])
          .then((s) => JSON.stringify(s.split(' '))),
      ) as string[];
      for (const image of podImages)
        expect(refs.has(image) || refs.has(`docker.io/${image}`), image).toBe(true);

      const res = await helm(['test', RELEASE, '-n', NS, '--timeout', '5m'], {
        kubeconfig: node.kubeconfigPath,
        timeoutMs: 6 * MINUTE,
      });
      expect(res.code, `${res.stderr}\n${res.stdout}`).toBe(0);
    },
    15 * MINUTE,
  );

  it(
    'allows a valid token, answers 429 over quota and 403 where policy denies; counters in the RedisCluster, profiles in the PostgresCluster',
    async () => {
      await applyPoliciesAndGateway();
      for (let i = 1; i <= 5; i++) expect((await get('alice')).status, `request ${i}`).toBe(200);
      const over = await get('alice');
      expect(over.status).toBe(429);
      expect(((await over.json()) as { error: string }).error).toBe('QUOTA_EXCEEDED');
      expect((await get('steady', '/admin/users')).status).toBe(403);

      // The counter: a key with alice's subject hash on a master of the chart's RedisCluster.
      const user = upstream.seen.find((s) => s.headers.authorization?.endsWith(tokens.alice!))?.headers[
        'x-user'
      ];
      expect(typeof user).toBe('string');
      const hash = subjectHash([`User=${user}`]);
      const keys = await redisKeysMatching(`*${hash}*`);
      expect(keys.length).toBeGreaterThan(0);

      // The profile: a users row for alice, written by the sidecar through the -rw Service
      // (profile writes are batched off the request path: wait for it).
      expect(await userRow('alice')).toEqual({ provider: `${NS}/corp`, subject: 'alice' });
    },
    15 * MINUTE,
  );

  it(
    "serves the sidecars' decisions through the admin API to a ServiceAccount RBAC allows, from a replica",
    async () => {
      await node.kubectl(['-n', NS, 'create', 'serviceaccount', 'auditor']);
      await node.kubectl([
        'create',
        'clusterrolebinding',
        'nox-it-auditor',
        `--clusterrole=${RELEASE}-admin-audit-reader`,
        `--serviceaccount=${NS}:auditor`,
      ]);
      const token = (await node.kubectl(['-n', NS, 'create', 'token', 'auditor'])).trim();
      const svc = await getJson<{ spec: { clusterIP: string } }>([
        '-n',
        NS,
        'get',
        'service',
        `${RELEASE}-admin`,
      ]);
      const search = (who: string) =>
        fetch(`http://${svc.spec.clusterIP}:9100/v1/audit/decisions?limit=1000`, {
          headers: { authorization: `Bearer ${who}` },
          signal: AbortSignal.timeout(10_000),
        });
      // alice's six requests of the test before: five allowed, the sixth over quota.
      type Page = { items: { subject: string | null; decision: string; code: string }[]; servedBy: string };
      let page: Page | undefined;
      const alices = () => page?.items.filter((i) => i.subject?.endsWith(':alice')) ?? [];
      await waitUntil(
        "alice's decisions in the audit log",
        async () => {
          const r = await search(token);
          const body = await r.text();
          if (r.status !== 200) throw new Error(`admin API answered ${r.status}: ${body.slice(0, 300)}`);
          page = JSON.parse(body) as Page;
          if (alices().length < 6)
            throw new Error(
              `${page.items.length} decisions, ${alices().length} of alice's: ${body.slice(0, 300)}`,
            );
          return true;
        },
        2 * MINUTE,
      );
      expect(alices().filter((i) => i.code === 'QUOTA_EXCEEDED')).toHaveLength(1);
      expect(page!.servedBy).toBe('replica');
      const refused = await search((await node.kubectl(['-n', NS, 'create', 'token', 'default'])).trim());
      expect(refused.status).toBe(403);
    },
    5 * MINUTE,
  );

  it(
    'heals when the Redis master pod and the PostgreSQL primary are killed under traffic',
    async () => {
      const traffic = steadyTraffic('steady');
      await waitUntil('traffic flowing', async () => (traffic.counts.get(200) ?? 0) > 0, MINUTE);
      const times: Record<string, number> = {};

      // Redis: a master's pod deleted, then another master's container killed in containerd. The
      // cluster promotes the master's replica; the pod comes back (StatefulSet, kubelet) and rejoins.
      for (const fault of ['delete pod', 'kill container'] as const) {
        const master = (await redisCluster()).status?.nodes?.find((n) => n.role === 'master');
        expect(master, 'a master in the RedisCluster status').toBeDefined();
        const uid = await podUid(master!.pod);
        const restarts = await restartCount(master!.pod);
        const okBefore = traffic.counts.get(200) ?? 0;
        const t0 = performance.now();
        if (fault === 'delete pod')
          await node.kubectl(['-n', NS, 'delete', 'pod', master!.pod, '--wait=false']);
        else await killContainers(master!.pod);
        await waitUntil(
          `${master!.pod} replaced or restarted after ${fault}`,
          async () => (await podUid(master!.pod)) !== uid || (await restartCount(master!.pod)) > restarts,
          3 * MINUTE,
        );
        await waitUntil(
          'checks allowed (quota counted) again',
          async () => (traffic.counts.get(200) ?? 0) > okBefore + 10,
          3 * MINUTE,
        );
        times[`redis ${fault}: allowed again ms`] = Math.round(performance.now() - t0);
        await waitUntil(
          'RedisCluster Ready with all 6 nodes and every slot',
          async () => {
            const rc = await redisCluster();
            return (
              condition(rc.status?.conditions, 'Ready')?.status === 'True' &&
              rc.status?.nodes?.filter((n) => n.role !== 'unknown').length === 6 &&
              (await podReady(master!.pod))
            );
          },
          5 * MINUTE,
        );
        times[`redis ${fault}: healed ms`] = Math.round(performance.now() - t0);
      }

      // PostgreSQL: the primary's container killed, then the (new) primary's pod deleted. The
      // operator promotes a replica; the sidecar's profile writes go to the new primary.
      for (const [i, fault] of (['kill container', 'delete pod'] as const).entries()) {
        const primary = (await postgresCluster()).status?.currentPrimary;
        expect(primary, 'a current primary in the PostgresCluster status').toBeTruthy();
        const t0 = performance.now();
        if (fault === 'delete pod') await node.kubectl(['-n', NS, 'delete', 'pod', primary!, '--wait=false']);
        else await killContainers(primary!);
        await waitUntil(
          'a PostgreSQL primary accepts writes through the -rw Service',
          async () => {
            try {
              await withPostgres((c) =>
                c.query('CREATE TEMP TABLE heal_probe (x int); INSERT INTO heal_probe VALUES (1)'),
              );
              return true;
            } catch {
              return false;
            }
          },
          5 * MINUTE,
        );
        times[`postgres ${fault}: writable ms`] = Math.round(performance.now() - t0);
        // A caller not seen before: the sidecar's profile write lands on the new primary.
        const newcomer = i === 0 ? 'bob' : 'carol';
        expect((await get(newcomer)).status).toBe(200);
        expect(await userRow(newcomer)).toEqual({ provider: `${NS}/corp`, subject: newcomer });
        times[`postgres ${fault}: profile written ms`] = Math.round(performance.now() - t0);
        await waitUntil(
          'PostgresCluster Ready again with both instances',
          async () => {
            const pgc = await postgresCluster();
            return (
              condition(pgc.status?.conditions, 'Ready')?.status === 'True' &&
              (
                await pods(`app.kubernetes.io/name=postgres,app.kubernetes.io/instance=${RELEASE}-postgres`)
              ).filter(ready).length === 2
            );
          },
          5 * MINUTE,
        );
        times[`postgres ${fault}: healed ms`] = Math.round(performance.now() - t0);
      }

      const counts = await traffic.stop();
      if (traffic.samples.length > 0) testLog('heal samples', traffic.samples);
      testLog('heal times', times, { answers: Object.fromEntries(counts), denials: traffic.denials });
      // The QuotaPolicy's failureMode is Closed (the default): while Redis fails over a check
      // may be refused 503 QUOTA_STORE_UNAVAILABLE, never answered otherwise.
      for (const status of counts.keys()) expect([200, 503], `answer ${status}`).toContain(status);
      for (const code of traffic.denials.keys()) expect(code).toBe('QUOTA_STORE_UNAVAILABLE');
    },
    15 * MINUTE,
  );

  it(
    'rolls the ext_authz pods on helm upgrade without denying a request the policy allows',
    async () => {
      const traffic = steadyTraffic('steady');
      await waitUntil('traffic flowing', async () => (traffic.counts.get(200) ?? 0) > 0, MINUTE);
      const before = await pods(`app.kubernetes.io/component=authz`);
      // The old pods' logs to their end (kubectl logs -f returns when the container stops).
      const oldLogs = before.map((p) =>
        node
          .kubectl(['-n', NS, 'logs', '-f', p.metadata.name], { timeoutMs: 10 * MINUTE })
          .catch((e: unknown) => String(e)),
      );
      const res = await helm(
        [
          'upgrade',
          RELEASE,
          'charts/nox',
          '-n',
          NS,
          '-f',
          values({
            sidecar: {
              checkDeadlineMs: 4000,
              redisTimeoutMs: 2500,
              redisWaitTimeoutMs: 500,
              logLevel: 'debug',
            },
          }),
          '--wait',
          '--timeout',
          '8m',
        ],
        { kubeconfig: node.kubeconfigPath, timeoutMs: 9 * MINUTE },
      );
      expect(res.code, res.stderr).toBe(0);
      // helm --wait returns once the new pods are Ready; the old ones still drain. Traffic runs
      // until they are gone, so every request of the whole rollout is counted.
      const oldNames = new Set(before.map((p) => p.metadata.name));
      await waitUntil(
        'the old ext_authz pods gone',
        async () =>
          !(await pods('app.kubernetes.io/component=authz')).some((p) => oldNames.has(p.metadata.name)),
        3 * MINUTE,
      );
      const counts = await traffic.stop();
      testLog('upgrade answers', Object.fromEntries(counts), {
        denials: traffic.denials,
        samples: traffic.samples,
      });
      if (traffic.samples.length > 0) {
        await logAuthzPods();
        for (const [i, out] of (await Promise.all(oldLogs)).entries()) {
          const notable = out
            .split('\n')
            .filter((l) => /"level":"(warn|error|fatal)"|draining|stopped/.test(l));
          testLog(`logs of old pod ${before[i]!.metadata.name}`, notable.slice(-30).join('\n'));
        }
      }
      const after = await pods('app.kubernetes.io/component=authz');
      expect(after.length).toBe(2);
      for (const p of after) expect(oldNames.has(p.metadata.name), `${p.metadata.name} is new`).toBe(false);
      expect([...counts.keys()]).toEqual([200]);
      expect(counts.get(200)).toBeGreaterThan(10);
    },
    15 * MINUTE,
  );

  it(
    'helm uninstall leaves only the CRDs and the data volumes',
    async () => {
      const res = await helm(['uninstall', RELEASE, '-n', NS, '--wait', '--timeout', '5m'], {
        kubeconfig: node.kubeconfigPath,
        timeoutMs: 6 * MINUTE,
      });
      expect(res.code, res.stderr).toBe(0);
      await waitUntil('the release’s pods are gone', async () => (await pods()).length === 0, 3 * MINUTE);
      const left = await node.kubectl([
        '-n',
        NS,
        'get',
        'all,configmaps,secrets,roles,rolebindings,pdb',
        '-o',
        'name',
      ]);
      const remaining = left
        .split('\n')
        .filter(Boolean)
        // Every namespace has these, made by Kubernetes itself.
        .filter((n) => n !== 'configmap/kube-root-ca.crt');
      expect(remaining).toEqual([]);
      const crds = await node.kubectl(['get', 'crds', '-o', 'name']);
      expect(crds).toContain('redisclusters.nox.dev');
      // The clusters' data stays, as with any StatefulSet: a reinstall finds it, deleting it is the user's call.
      const pvcs = (await node.kubectl(['-n', NS, 'get', 'pvc', '-o', 'name'])).split('\n').filter(Boolean);
      testLog('left after uninstall', { pvcs });
      expect(pvcs.length).toBe(6 + 2);
      for (const pvc of pvcs)
        expect(pvc).toMatch(new RegExp(`^persistentvolumeclaim/\\w+-${RELEASE}-(redis|postgres)-\\d+$`));
    },
    15 * MINUTE,
  );
});

// ---------------------------------------------------------------------------------------
// The data stores as the test reaches them: pod and Service IPs are routed from the host.

async function secretValue(name: string, key: string): Promise<string> {
  const s = await getJson<{ data: Record<string, string> }>(['-n', NS, 'get', 'secret', name]);
  const v = s.data[key];
  if (v === undefined) throw new Error(`Secret ${name} has no key ${key}`);
  return Buffer.from(v, 'base64').toString();
}

async function redisKeysMatching(pattern: string): Promise<string[]> {
  const rc = await getJson<
    RedisClusterObj & { spec: { passwordSecretRef?: { name: string; key?: string } } }
  >(['-n', NS, 'get', 'rediscluster', `${RELEASE}-redis`]);
  const ref = rc.spec.passwordSecretRef ?? { name: `${RELEASE}-redis-auth`, key: 'password' };
  const password = await secretValue(ref.name, ref.key ?? 'password');
  const found: string[] = [];
  for (const n of rc.status?.nodes ?? []) {
    if (n.role !== 'master') continue;
    const [host, port] = n.address.split(':');
    const r = new Redis({ host, port: Number(port), password, lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await r.connect();
      let cursor = '0';
      do {
        const [next, keys] = await r.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        found.push(...keys);
        cursor = next;
      } while (cursor !== '0');
    } finally {
      r.disconnect();
    }
  }
  return found;
}

const redisCluster = () => getJson<RedisClusterObj>(['-n', NS, 'get', 'rediscluster', `${RELEASE}-redis`]);
const postgresCluster = () =>
  getJson<PostgresClusterObj>(['-n', NS, 'get', 'postgrescluster', `${RELEASE}-postgres`]);
const pod = (name: string) =>
  getJson<Pod & { metadata: { uid: string } }>(['-n', NS, 'get', 'pod', name]).catch(() => undefined);
const podUid = async (name: string) => (await pod(name))?.metadata.uid;
const podReady = async (name: string) => {
  const p = await pod(name);
  return p !== undefined && ready(p);
};
const restartCount = async (name: string) =>
  ((await pod(name))?.status?.containerStatuses ?? []).reduce((n, c) => n + c.restartCount, 0);

/** The ext_authz pods' recent warnings and errors, into the test log. */
async function logAuthzPods(): Promise<void> {
  for (const p of await pods('app.kubernetes.io/component=authz')) {
    const out = await node
      .kubectl(['-n', NS, 'logs', p.metadata.name, '--tail=400'])
      .catch((e: unknown) => String(e));
    const notable = out.split('\n').filter((l) => /"level":"(warn|error|fatal)"/.test(l));
    testLog(`logs of ${p.metadata.name}`, notable.slice(-40).join('\n'));
  }
}

/** SIGKILLs a pod's containers in containerd, the way an OOM kill or a crash ends them. */
async function killContainers(podName: string): Promise<void> {
  const ids = (await node.crictl(['ps', '-q', '--label', `io.kubernetes.pod.name=${podName}`]))
    .split('\n')
    .filter(Boolean);
  expect(ids.length, `running containers of ${podName}`).toBeGreaterThan(0);
  for (const id of ids) await node.ctr(['tasks', 'kill', '--signal', 'SIGKILL', id]);
}

/** The users row the sidecar writes for a caller, once it is there. */
async function userRow(subject: string): Promise<{ provider: string; subject: string }> {
  let row: { provider: string; subject: string } | undefined;
  await waitUntil(
    `a users row for ${subject}`,
    async () => {
      const res = await withPostgres((c) =>
        c.query<{ provider: string; subject: string }>(
          'SELECT provider, subject FROM users WHERE subject = $1',
          [subject],
        ),
      ).catch(() => undefined);
      row = res?.rows[0];
      return row !== undefined;
    },
    MINUTE,
  );
  return row!;
}

async function withPostgres<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const uri = new URL(await secretValue(`${RELEASE}-postgres-app`, 'uri'));
  // The URI names the -rw Service by its cluster DNS name; the host reaches it by ClusterIP.
  const svc = await getJson<{ spec: { clusterIP: string } }>([
    '-n',
    NS,
    'get',
    'service',
    `${RELEASE}-postgres-rw`,
  ]);
  uri.hostname = svc.spec.clusterIP;
  const client = new pg.Client({ connectionString: uri.toString(), connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}
