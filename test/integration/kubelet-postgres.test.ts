import { readFileSync, statSync } from 'node:fs';
import type { KubeConfig, V1Pod, V1Service } from '@kubernetes/client-node';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNamespace } from '../harness/crds.js';
import { type Kube, startKube } from '../harness/kube.js';
import { kubeRequest } from '../harness/kubeHttp.js';
import { type Kubelet, startKubelet } from '../harness/kubelet.js';
import { type KubeProxy, startKubeProxy } from '../harness/kubeProxy.js';
import { testLog } from '../harness/log.js';
import { waitUntil } from '../harness/process.js';

/**
 * The kubelet stand-in running a PostgreSQL pod (image postgres:15, as uid 999 with the
 * image's passwd through nss_wrapper), with the kube-proxy stand-in and cluster DNS: plain
 * API objects, no operator. What a PostgresCluster pod relies on: initdb and postgres as a
 * non-root user, the Service's ClusterIP reachable through the proxy, `<svc>.<ns>.svc`
 * resolving inside the pod and following the Service, downward API files following the
 * pod's labels.
 */

const NS = 'kubelet-pg';
const POD = 'pg-0';
const PASSWORD = 'pa:ss"w\\rd';
const ROLE = 'example.com/role';
const running = process.getuid?.() === 0;

/** The container's script: initdb, postgres on the pod IP, then a loop that records what it sees. */
const SCRIPT = `#!/bin/sh
set -u
echo "running as $(id -u):$(id -g) ($(id -un)), HOME=$HOME, hostname $(hostname)"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp "$NOX_SOCKET_DIR/pw.XXXXXX")
  printf '%s' "$POSTGRES_PASSWORD" > "$pw"
  initdb -D "$PGDATA" -U postgres --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 >/dev/null || exit 1
  rm -f "$pw"
  echo "host all all 127.0.0.0/8 scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi
postgres -D "$PGDATA" -c listen_addresses="$POD_IP" -c unix_socket_directories="$NOX_SOCKET_DIR" -c fsync=off &
pid=$!
trap 'kill -INT $pid; wait $pid; exit 0' TERM INT
until pg_isready -q -h "$NOX_SOCKET_DIR"; do sleep 0.2; done
psql -q -h "$NOX_SOCKET_DIR" -U postgres -d postgres -c \\
  "CREATE TABLE IF NOT EXISTS probe (at timestamptz DEFAULT clock_timestamp(), fq text, short text, ns text, role text, via inet)"
export PGPASSWORD="$POSTGRES_PASSWORD"
addr() { getent hosts "$1" | { read -r a _ || true; echo "\${a:-}"; }; }
while kill -0 $pid 2>/dev/null; do
  fq=$(addr "db.$POD_NAMESPACE.svc")
  short=$(addr db)
  ns=$(addr "db.$POD_NAMESPACE")
  role=$(sed -n 's|^example\\.com/role="\\(.*\\)"$|\\1|p' "$NOX_PODINFO_DIR/labels")
  # Through the Service, by its DNS name: resolver, kube-proxy stand-in and postgres at once.
  psql -q "host=$NOX_PRIMARY_HOST port=5432 user=postgres dbname=postgres connect_timeout=3" -c \\
    "INSERT INTO probe (fq, short, ns, role, via) VALUES ('$fq', '$short', '$ns', '$role', inet_server_addr())" \\
    >/dev/null 2>&1
  sleep 0.3
done
wait $pid
`;

describe('kubelet stand-in: a postgres:15 pod, with kube-proxy and cluster DNS stand-ins', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let kubelet: Kubelet;
  let proxy: KubeProxy;
  const t0 = Date.now();

  const req = async (method: string, path: string, body?: unknown, contentType?: string) => {
    const r = await kubeRequest(kc, method, path, {
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      ...(contentType ? { contentType } : {}),
    });
    if (r.status >= 300)
      throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body).slice(0, 400)}`);
    return r.body;
  };
  const pod = async () => (await req('GET', `/api/v1/namespaces/${NS}/pods/${POD}`)) as V1Pod;
  const ready = (p: V1Pod) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
  const createService = async () =>
    (await req('POST', `/api/v1/namespaces/${NS}/services`, {
      metadata: { name: 'db' },
      spec: { selector: { app: 'pg' }, ports: [{ name: 'postgres', port: 5432, targetPort: 'postgres' }] },
    })) as V1Service;

  const query = async <T>(host: string, sql: string): Promise<T[]> => {
    const c = new pg.Client({
      host,
      port: 5432,
      user: 'postgres',
      password: PASSWORD,
      database: 'postgres',
      connectionTimeoutMillis: 5000,
    });
    c.on('error', () => {});
    await c.connect();
    try {
      return (await c.query(sql)).rows as T[];
    } finally {
      await c.end();
    }
  };
  type Probe = { fq: string; short: string; ns: string; role: string; via: string };
  /** The newest row the pod's loop wrote through the Service (read through the Service too). */
  const latestProbe = async (clusterIP: string) =>
    (await query<Probe>(clusterIP, 'SELECT fq, short, ns, role, via FROM probe ORDER BY at DESC LIMIT 1'))[0];

  beforeAll(async () => {
    kube = await startKube({ controllerManager: true });
    kc = kube.kubeConfig();
    await createNamespace(kc, NS);
    await waitUntil(
      `serviceaccount ${NS}/default`,
      async () =>
        (await kubeRequest(kc, 'GET', `/api/v1/namespaces/${NS}/serviceaccounts/default`)).status === 200,
      30_000,
    );
    kubelet = await startKubelet(kube, { nodeName: 'node-pg' });
    proxy = await startKubeProxy(kube, { namespaces: [NS] });
    testLog(`control plane, kubelet and kube-proxy up in ${Date.now() - t0} ms`);
  });

  afterAll(async () => {
    await proxy?.stop();
    await kubelet?.stopAll();
    await kube?.stop();
  });

  it('runs postgres as uid 999, Ready by its exec probe, reachable through the ClusterIP and by DNS from inside', async () => {
    await req('POST', `/api/v1/namespaces/${NS}/secrets`, {
      metadata: { name: 'pg-auth' },
      stringData: { password: PASSWORD },
    });
    await req('POST', `/api/v1/namespaces/${NS}/configmaps`, {
      metadata: { name: 'pg-config' },
      data: { 'instance-manager.sh': SCRIPT },
    });
    const svc = await createService();
    const clusterIP = svc.spec!.clusterIP!;
    expect(clusterIP).toMatch(/^127\.\d+\.\d+\.\d+$/);
    await req('POST', `/api/v1/namespaces/${NS}/pods`, {
      metadata: {
        name: POD,
        labels: { 'app.kubernetes.io/part-of': 'nox', app: 'pg', [ROLE]: 'primary' },
        annotations: { 'example.com/note': 'a "quoted"\nvalue' },
      },
      spec: {
        automountServiceAccountToken: false,
        enableServiceLinks: false,
        terminationGracePeriodSeconds: 20,
        securityContext: { runAsNonRoot: true, runAsUser: 999, runAsGroup: 999, fsGroup: 999 },
        containers: [
          {
            name: 'postgres',
            image: 'postgres:15',
            command: ['sh', '/etc/postgresql/instance-manager.sh'],
            env: [
              { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
              { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
              { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
              {
                name: 'POSTGRES_PASSWORD',
                valueFrom: { secretKeyRef: { name: 'pg-auth', key: 'password' } },
              },
              { name: 'PGDATA', value: '/var/lib/postgresql/data/pgdata' },
              { name: 'NOX_CONFIG_DIR', value: '/etc/postgresql' },
              { name: 'NOX_PODINFO_DIR', value: '/etc/podinfo' },
              { name: 'NOX_SOCKET_DIR', value: '/var/run/postgresql' },
              { name: 'PGHOST', value: '/var/run/postgresql' },
              { name: 'NOX_PRIMARY_HOST', value: `db.${NS}.svc` },
            ],
            ports: [{ name: 'postgres', containerPort: 5432, protocol: 'TCP' }],
            readinessProbe: {
              exec: { command: ['pg_isready', '-q', '-h', '/var/run/postgresql', '-p', '5432'] },
              periodSeconds: 1,
              timeoutSeconds: 2,
              failureThreshold: 2,
            },
            volumeMounts: [
              { name: 'config', mountPath: '/etc/postgresql', readOnly: true },
              { name: 'podinfo', mountPath: '/etc/podinfo', readOnly: true },
              { name: 'data', mountPath: '/var/lib/postgresql/data' },
              { name: 'run', mountPath: '/var/run/postgresql' },
            ],
          },
        ],
        volumes: [
          { name: 'config', configMap: { name: 'pg-config' } },
          {
            name: 'podinfo',
            downwardAPI: {
              items: [
                { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
                { path: 'annotations', fieldRef: { fieldPath: 'metadata.annotations' } },
              ],
            },
          },
          { name: 'data', emptyDir: {} },
          { name: 'run', emptyDir: {} },
        ],
      },
    });

    const created = Date.now();
    let last: V1Pod | undefined;
    try {
      await waitUntil(
        'the postgres pod to be Ready',
        async () => {
          last = await pod();
          return ready(last) === true;
        },
        120_000,
      );
    } catch (e) {
      testLog('pod status:', JSON.stringify(last?.status, null, 1));
      const log = kubelet.logFile(`${NS}/${POD}`);
      if (log) testLog(readFileSync(log, 'utf8').slice(-3000));
      throw e;
    }
    testLog(`pod Ready ${Date.now() - created} ms after creation`);
    const podIP = last!.status!.podIP!;
    expect(podIP).toMatch(/^127\.0\.\d+\.\d+$/);

    // initdb ran as the pod's user: PGDATA is 999's, mode 0700.
    const pgdata = kubelet.hostPath(`${NS}/${POD}`, '/var/lib/postgresql/data/pgdata')!;
    const st = statSync(pgdata);
    expect(st.mode & 0o777).toBe(0o700);
    if (running) expect([st.uid, st.gid]).toEqual([999, 999]);
    const log = readFileSync(kubelet.logFile(`${NS}/${POD}`)!, 'utf8');
    expect(log).toContain(running ? 'running as 999:999 (postgres)' : '(postgres)');
    expect(log).toContain(`hostname ${POD}`);

    // Through the kube-proxy stand-in: ClusterIP:5432 → pod IP:5432 (targetPort by name).
    expect(proxy.listeners()).toEqual({ [`${clusterIP}:5432`]: `${NS}/db` });
    const [row] = await query<{ current_user: string; server: string }>(
      clusterIP,
      'SELECT current_user, host(inet_server_addr()) AS server',
    );
    expect(row).toEqual({ current_user: 'postgres', server: podIP });

    // Inside the pod: db.<ns>.svc, db.<ns> and db resolve to the ClusterIP, and psql reaches
    // the server by that name.
    let probe: Probe | undefined;
    await waitUntil(
      'a row from the pod, written through db.<ns>.svc',
      async () => {
        probe = await latestProbe(clusterIP);
        return probe !== undefined;
      },
      30_000,
    );
    expect(probe).toEqual({ fq: clusterIP, short: clusterIP, ns: clusterIP, role: 'primary', via: podIP });
  });

  it('refreshes the downward API files when the pod’s labels change', async () => {
    const labelsFile = kubelet.hostPath(`${NS}/${POD}`, '/etc/podinfo/labels')!;
    const annotationsFile = kubelet.hostPath(`${NS}/${POD}`, '/etc/podinfo/annotations')!;
    // The kubelet's format: key="value" (Go %q), sorted, no final newline.
    expect(readFileSync(labelsFile, 'utf8')).toBe(
      ['app="pg"', 'app.kubernetes.io/part-of="nox"', `${ROLE}="primary"`].join('\n'),
    );
    const annotations = readFileSync(annotationsFile, 'utf8').split('\n');
    expect(annotations[0]).toBe('example.com/note="a \\"quoted\\"\\nvalue"');
    expect(annotations).toContain('kubernetes.io/config.source="api"');
    expect(annotations.some((l) => l.startsWith('kubernetes.io/config.seen="'))).toBe(true);

    const changed = Date.now();
    await req(
      'PATCH',
      `/api/v1/namespaces/${NS}/pods/${POD}`,
      { metadata: { labels: { [ROLE]: 'replica' } } },
      'application/merge-patch+json',
    );
    await waitUntil(
      'the new label in /etc/podinfo/labels',
      async () => readFileSync(labelsFile, 'utf8').includes(`${ROLE}="replica"`),
      2_000,
    );
    testLog(`label visible in /etc/podinfo/labels ${Date.now() - changed} ms after the patch`);
    // And the script (uid 999, polling the file) sees it.
    const svc = (await req('GET', `/api/v1/namespaces/${NS}/services/db`)) as V1Service;
    await waitUntil(
      'the pod’s loop to see role replica',
      async () => (await latestProbe(svc.spec!.clusterIP!))?.role === 'replica',
      15_000,
    );
  });

  it('follows a Service deleted and recreated with a new ClusterIP: DNS inside the pod and the proxy', async () => {
    const before = (await req('GET', `/api/v1/namespaces/${NS}/services/db`)) as V1Service;
    const oldIP = before.spec!.clusterIP!;
    let fresh: V1Service;
    for (;;) {
      await req('DELETE', `/api/v1/namespaces/${NS}/services/db`);
      await waitUntil(
        'service db deleted',
        async () => (await kubeRequest(kc, 'GET', `/api/v1/namespaces/${NS}/services/db`)).status === 404,
        10_000,
      );
      fresh = await createService();
      if (fresh.spec!.clusterIP !== oldIP) break; // the allocator may, rarely, hand out the same one
    }
    const newIP = fresh.spec!.clusterIP!;
    const created = Date.now();
    await waitUntil(
      'the pod to resolve db.<ns>.svc to the new ClusterIP and reach it',
      async () => {
        const p = await latestProbe(newIP).catch(() => undefined);
        return p?.fq === newIP && p.short === newIP;
      },
      20_000,
    );
    testLog(`pod resolved and reached the new ClusterIP ${Date.now() - created} ms after the Service`);
    expect(proxy.listeners()).toEqual({ [`${newIP}:5432`]: `${NS}/db` });
    // The old address is not served any more: nothing listens there.
    await expect(query(oldIP, 'SELECT 1')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('proxy: keeps forwarded connections when the endpoint goes, rejects new ones without endpoints', async () => {
    const svc = (await req('GET', `/api/v1/namespaces/${NS}/services/db`)) as V1Service;
    const ip = svc.spec!.clusterIP!;
    const held = new pg.Client({
      host: ip,
      port: 5432,
      user: 'postgres',
      password: PASSWORD,
      database: 'postgres',
    });
    held.on('error', () => {});
    await held.connect();
    const relabel = (app: string) =>
      req(
        'PATCH',
        `/api/v1/namespaces/${NS}/pods/${POD}`,
        { metadata: { labels: { app } } },
        'application/merge-patch+json',
      );
    try {
      await relabel('elsewhere');
      await waitUntil(
        'a new connection to be refused (no endpoints)',
        async () =>
          (await query(ip, 'SELECT 1').then(
            () => 'ok',
            (e: Error) => e.message,
          )) !== 'ok',
        10_000,
      );
      expect((await held.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await relabel('pg');
      await held.end().catch(() => {});
    }
    await waitUntil(
      'the Service to serve again',
      async () => (await query(ip, 'SELECT 1')).length === 1,
      10_000,
    );
  });

  it('stop()/resume() a postgres container: its whole process tree goes, it comes back on the same IP and data', async () => {
    const before = kubelet.pods().find((p) => p.name === POD)!;
    await kubelet.stop(`${NS}/${POD}`);
    await waitUntil('the pod NotReady', async () => ready(await pod()) !== true, 10_000);
    const ip = ((await req('GET', `/api/v1/namespaces/${NS}/services/db`)) as V1Service).spec!.clusterIP!;
    // The server's port on the pod IP is closed: no backend or postmaster survived.
    await expect(query(before.ip!, 'SELECT 1')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await kubelet.resume(`${NS}/${POD}`);
    await waitUntil('the pod Ready again', async () => ready(await pod()) === true, 60_000);
    const after = kubelet.pods().find((p) => p.name === POD)!;
    expect(after.ip).toBe(before.ip);
    expect(after.restarts).toBe(before.restarts + 1);
    // The emptyDir survived the container: the table the first start made is there.
    const rows = await query<{ n: number }>(ip, 'SELECT count(*)::int AS n FROM probe');
    expect(rows[0]?.n).toBeGreaterThan(0);
  });

  it('still runs redis:7.0 pods the same way (as uid 999, exec probe through redis-cli)', async () => {
    await req('POST', `/api/v1/namespaces/${NS}/pods`, {
      metadata: { name: 'redis-0', labels: { 'app.kubernetes.io/part-of': 'nox', app: 'redis' } },
      spec: {
        automountServiceAccountToken: false,
        securityContext: { runAsNonRoot: true, runAsUser: 999, runAsGroup: 999, fsGroup: 999 },
        containers: [
          {
            name: 'redis',
            image: 'redis:7.0',
            command: ['redis-server'],
            args: ['--port', '6379', '--dir', '/data', '--requirepass', '$(PW)'],
            env: [{ name: 'PW', value: 'secret' }],
            ports: [{ name: 'redis', containerPort: 6379 }],
            readinessProbe: {
              exec: {
                command: [
                  'sh',
                  '-c',
                  'REDISCLI_AUTH="$PW" redis-cli -h "$HOSTNAME" -p 6379 ping | grep -q PONG',
                ],
              },
              periodSeconds: 1,
            },
            volumeMounts: [{ name: 'data', mountPath: '/data' }],
          },
        ],
        volumes: [{ name: 'data', emptyDir: {} }],
      },
    });
    let p: V1Pod | undefined;
    await waitUntil(
      'the redis pod to be Ready',
      async () => {
        p = (await req('GET', `/api/v1/namespaces/${NS}/pods/redis-0`)) as V1Pod;
        return ready(p) === true;
      },
      60_000,
    );
    const r = new Redis({ host: p!.status!.podIP!, port: 6379, password: 'secret', lazyConnect: true });
    try {
      await r.connect();
      expect(await r.ping()).toBe('PONG');
      // redis-server wrote its data dir as 999 (fsGroup 999).
      await r.set('k', 'v');
      await r.save();
      const dump = statSync(`${kubelet.hostPath(`${NS}/redis-0`, '/data')!}/dump.rdb`);
      if (running) expect(dump.uid).toBe(999);
    } finally {
      r.disconnect();
    }
  });
});
