import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../../common/resources/types.gen.js';
import {
  CONFIG_HASH_ANNOTATION,
  CONFIG_VERSION_SETTING,
  childList,
  clusterOfPod,
  configVersion,
  desiredChildren,
  durationMs,
  instanceManagerScript,
  labelsOf,
  pgHbaConf,
  postgresqlConf,
  selectorLabels,
  slotName,
  synchronousStandbyNames,
  validateSpec,
} from './desired.js';

function cluster(spec: Partial<PostgresCluster['spec']> = {}): PostgresCluster {
  return {
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'PostgresCluster',
    metadata: { name: 'pg', namespace: 'nox', uid: 'u-1', generation: 2 },
    spec: { instances: 3, image: 'postgres:15', ...spec },
  };
}
const pw = { superuserPassword: 'su', appPassword: 'p@ss/w' };

describe('PostgresCluster desired children', () => {
  it('are two Secrets, a ConfigMap, three Services, a PDB and a StatefulSet, all owned', () => {
    const list = childList(desiredChildren(cluster(), pw));
    expect(list.map((o) => `${o.kind}/${o.metadata?.name}`)).toEqual([
      'Secret/pg-superuser',
      'Secret/pg-app',
      'ConfigMap/pg-config',
      'Service/pg-instances',
      'Service/pg-rw',
      'Service/pg-ro',
      'PodDisruptionBudget/pg',
      'StatefulSet/pg',
    ]);
    for (const o of list) {
      expect(o.metadata?.namespace).toBe('nox');
      expect(o.metadata?.ownerReferences).toEqual([
        {
          apiVersion: 'nox.dev/v1alpha1',
          kind: 'PostgresCluster',
          name: 'pg',
          uid: 'u-1',
          controller: true,
          blockOwnerDeletion: true,
        },
      ]);
      expect(o.metadata?.labels?.['app.kubernetes.io/part-of']).toBe('nox');
    }
  });

  it('put the passwords in the Secrets, with a URL-encoded application URI', () => {
    const c = desiredChildren(cluster({ database: { name: 'shop', owner: 'app' } }), pw);
    const dec = (s: string | undefined) => Buffer.from(s!, 'base64').toString();
    expect(dec(c.superuserSecret!.data!.password)).toBe('su');
    expect(dec(c.superuserSecret!.data!.username)).toBe('postgres');
    expect(dec(c.appSecret!.data!.password)).toBe('p@ss/w');
    expect(dec(c.appSecret!.data!.uri)).toBe('postgresql://app:p%40ss%2Fw@pg-rw.nox.svc:5432/shop');
    expect(() => desiredChildren(cluster(), { superuserPassword: 'x' })).toThrow(/application password/);
  });

  it('use referenced Secrets instead of generating them', () => {
    const c = desiredChildren(
      cluster({ superuserSecretRef: { name: 'su', key: 'k' }, appSecretRef: { name: 'app', key: 'pw' } }),
    );
    expect(c.superuserSecret).toBeUndefined();
    expect(c.appSecret).toBeUndefined();
    const env = c.statefulSet.spec!.template.spec!.containers[0]!.env!;
    expect(env.find((e) => e.name === 'POSTGRES_PASSWORD')?.valueFrom?.secretKeyRef).toEqual({
      name: 'su',
      key: 'k',
    });
    expect(env.find((e) => e.name === 'NOX_APP_PASSWORD')?.valueFrom?.secretKeyRef).toEqual({
      name: 'app',
      key: 'pw',
    });
  });

  it('route -rw to the primary and -ro to the replicas by the role label', () => {
    const { rw, ro, headless } = desiredChildren(cluster(), pw);
    expect(rw.spec?.selector).toEqual({ ...selectorLabels('pg'), 'nox.dev/role': 'primary' });
    expect(ro.spec?.selector).toEqual({ ...selectorLabels('pg'), 'nox.dev/role': 'replica' });
    expect(headless.spec?.clusterIP).toBe('None');
    expect(headless.spec?.publishNotReadyAddresses).toBe(true);
    expect(headless.spec?.selector).toEqual(selectorLabels('pg'));
  });

  it('size the StatefulSet by instances, with the instance manager, probe, storage and resources', () => {
    const { statefulSet, pdb } = desiredChildren(
      cluster({
        instances: 5,
        storage: { size: '2Gi', storageClassName: 'fast' },
        resources: { requests: { cpu: '100m' } },
        nodeSelector: { disk: 'ssd' },
      }),
      pw,
    );
    const spec = statefulSet.spec!;
    expect(spec.replicas).toBe(5);
    expect(spec.serviceName).toBe('pg-instances');
    expect(spec.selector.matchLabels).toEqual(selectorLabels('pg'));
    // The role label is the operator's, never the template's (or a failover would roll the pods).
    expect(spec.template.metadata?.labels?.['nox.dev/role']).toBeUndefined();
    const pod = spec.template.spec!;
    expect(pod.nodeSelector).toEqual({ disk: 'ssd' });
    const c = pod.containers[0]!;
    expect(c.name).toBe('instance-manager');
    expect(c.image).toBe('postgres:15');
    expect(c.resources).toEqual({ requests: { cpu: '100m' } });
    expect(c.readinessProbe?.exec?.command?.[0]).toBe('pg_isready');
    const env = Object.fromEntries(c.env!.map((e) => [e.name, e.value ?? e.valueFrom]));
    expect(env.NOX_PRIMARY_HOST).toBe('pg-rw.nox.svc');
    expect(env.NOX_SOCKET_DIR).toBe('/var/run/postgresql');
    expect(env.POD_NAME).toEqual({ fieldRef: { fieldPath: 'metadata.name' } });
    expect(pod.volumes?.find((v) => v.name === 'podinfo')?.downwardAPI?.items?.map((i) => i.path)).toEqual([
      'labels',
      'annotations',
    ]);
    expect(pod.volumes?.some((v) => v.name === 'data')).toBe(false);
    expect(spec.volumeClaimTemplates?.[0]?.spec).toEqual({
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: '2Gi' } },
      storageClassName: 'fast',
    });
    expect(pdb.spec?.maxUnavailable).toBe(1);
  });

  it('use an emptyDir without storage', () => {
    const sts = desiredChildren(cluster(), pw).statefulSet.spec!;
    expect(sts.volumeClaimTemplates).toBeUndefined();
    expect(sts.template.spec!.volumes?.find((v) => v.name === 'data')?.emptyDir).toEqual({});
  });

  it('roll the pods when the configuration changes, and only then', () => {
    const hash = (c: PostgresCluster) =>
      desiredChildren(c, pw).statefulSet.spec!.template.metadata!.annotations![CONFIG_HASH_ANNOTATION];
    expect(hash(cluster())).toBe(hash(cluster()));
    expect(hash(cluster({ parameters: { work_mem: '8MB' } }))).not.toBe(hash(cluster()));
    expect(hash(cluster({ synchronous: { mode: 'Quorum', number: 1 } }))).not.toBe(hash(cluster()));
    // Passwords are not in the ConfigMap: rotating one does not roll the pods by itself.
    expect(hash(cluster())).toBe(
      desiredChildren(cluster(), { superuserPassword: 'a', appPassword: 'b' }).statefulSet.spec!.template
        .metadata!.annotations![CONFIG_HASH_ANNOTATION],
    );
  });
});

describe('postgresql.conf', () => {
  it('has the user parameters and the operator settings, the operator last', () => {
    const conf = postgresqlConf(cluster({ parameters: { work_mem: '8MB', max_wal_senders: '20' } }));
    const lines = conf.split('\n');
    expect(lines).toContain("work_mem = '8MB'");
    expect(lines).toContain("max_wal_senders = '20'");
    expect(lines).toContain("max_replication_slots = '10'");
    expect(lines).toContain("wal_level = 'replica'");
    expect(lines).toContain("hot_standby = 'on'");
    expect(lines).toContain("synchronous_standby_names = ''");
    expect(lines.some((l) => l.startsWith('hba_file') || l.startsWith('listen_addresses'))).toBe(false);
    expect(lines.indexOf("wal_level = 'replica'")).toBeGreaterThan(lines.indexOf("work_mem = '8MB'"));
  });

  it('ends with the version of its settings, which changes with them and only with them', () => {
    const version = (c: PostgresCluster) => postgresqlConf(c).trimEnd().split('\n').at(-1);
    const a = cluster({ parameters: { work_mem: '8MB' } });
    expect(version(a)).toBe(`${CONFIG_VERSION_SETTING} = '${configVersion(a)}'`);
    expect(configVersion(cluster({ parameters: { work_mem: '8MB' } }))).toBe(configVersion(a));
    expect(configVersion(cluster({ parameters: { work_mem: '8MB', max_connections: '150' } }))).not.toBe(
      configVersion(a),
    );
  });

  it('quotes values', () => {
    expect(postgresqlConf(cluster({ parameters: { application_name: "it's" } }))).toContain(
      "application_name = 'it''s'",
    );
  });

  it('derives synchronous_standby_names from spec.synchronous over the instance names', () => {
    expect(synchronousStandbyNames(cluster({ synchronous: { mode: 'Quorum', number: 1 } }))).toBe(
      'ANY 1 ("pg-0", "pg-1", "pg-2")',
    );
    expect(
      synchronousStandbyNames(cluster({ instances: 4, synchronous: { mode: 'First', number: 2 } })),
    ).toBe('FIRST 2 ("pg-0", "pg-1", "pg-2", "pg-3")');
    expect(synchronousStandbyNames(cluster({ synchronous: { mode: 'Off', number: 1 } }))).toBe('');
    expect(synchronousStandbyNames(cluster())).toBe('');
    expect(postgresqlConf(cluster({ synchronous: { mode: 'Quorum', number: 2 } }))).toContain(
      `synchronous_standby_names = 'ANY 2 ("pg-0", "pg-1", "pg-2")'`,
    );
  });
});

describe('pg_hba.conf', () => {
  it('allows replication with SCRAM from the pods, and nothing without a password', () => {
    const hba = pgHbaConf();
    expect(hba).toMatch(/^host\s+replication\s+postgres\s+all\s+scram-sha-256$/m);
    expect(hba).not.toMatch(/\btrust\b|\bmd5\b|\bpassword\b/);
    expect(pgHbaConf(['10.0.0.0/8', 'fd00::/8'])).toMatch(/replication\s+postgres\s+fd00::\/8\s+scram/);
  });
});

describe('instance manager script', () => {
  it('is valid sh', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'nox-im-')), 'instance-manager.sh');
    writeFileSync(file, instanceManagerScript());
    expect(spawnSync('sh', ['-n', file], { encoding: 'utf8' }).stderr).toBe('');
  });
  it('never starts a fenced instance and waits for a role', () => {
    const s = instanceManagerScript();
    expect(s).toContain('nox\\.dev/fenced="true"');
    expect(s).toContain('s|^nox\\.dev/role=');
    expect(s).toContain('standby.signal');
  });
  it('after a rewind, asks the primary for the WAL segment recovery starts from, under the timeline that holds it', () => {
    // The script's own functions, run by sh; what it asks the primary for is recorded, and the
    // answers are those of a primary on timeline 12 (history 9 → 10 → 11 → 12) holding no segment.
    const s = instanceManagerScript();
    const functions = s.slice(s.indexOf('on_primary()'), s.indexOf('start_primary() {'));
    const dir = mkdtempSync(join(tmpdir(), 'nox-im-'));
    const history =
      '9\\t0/5887648\\tno recovery target specified\\n\\n10\\t0/6903BB0\\tx\\n11\\t0/8A00000\\tx\\n';
    const asked = (start: string) => {
      const script = `${functions}
log() { :; }
pg_controldata() { echo 'Bytes per WAL segment:                16777216'; }
on_primary() {
  case "$1" in
    *pg_walfile_name*) echo 0000000C ;;
    *pg_read_file*) printf '${history}' ;;
    *pg_ls_waldir*) echo "$1" | sed -n "s/.*name = '\\\\(.*\\\\)'/\\\\1/p" >&2; echo 0 ;;
  esac
}
PGDATA=${dir}
printf 'START WAL LOCATION: ${start} (file x)\\n' > "$PGDATA/backup_label"
rewind_wal_missing && echo missing`;
      const r = spawnSync('sh', ['-c', script], { encoding: 'utf8' });
      return { segment: r.stderr.trim(), missing: r.stdout.trim() === 'missing' };
    };
    // The segment where timeline 11 began is asked for as timeline 11's, not 10's.
    expect(asked('0/6457598')).toEqual({ segment: '0000000B0000000000000006', missing: true });
    expect(asked('0/5457598')).toEqual({ segment: '0000000A0000000000000005', missing: true });
    expect(asked('0/1000000')).toEqual({ segment: '000000090000000000000001', missing: true });
    expect(asked('0/9457598')).toEqual({ segment: '0000000C0000000000000009', missing: true });
    expect(asked('1/00000000')).toEqual({ segment: '0000000C0000000100000000', missing: true });
  });
  it('uses the same slot name as the operator', () => {
    expect(slotName('pg-2')).toBe('nox_pg_2');
  });
});

describe('validateSpec', () => {
  it('accepts the defaults', () => {
    expect(validateSpec(cluster().spec, 'pg')).toEqual([]);
    expect(
      validateSpec(
        cluster({
          synchronous: { mode: 'Quorum', number: 2 },
          failover: { enabled: true, delay: '5s' },
          switchoverTo: 'pg-2',
          parameters: { 'auto_explain.log_min_duration': '1s', max_wal_senders: '10' },
        }).spec,
        'pg',
      ),
    ).toEqual([]);
  });

  it('refuses what the schema cannot catch', () => {
    const v = (spec: Partial<PostgresCluster['spec']>) => validateSpec(cluster(spec).spec, 'pg');
    expect(v({ switchoverTo: 'pg-3' })).toEqual([
      'switchoverTo: "pg-3" is not an instance of this cluster (pg-0, pg-1, pg-2)',
    ]);
    expect(v({ parameters: { work_mem: "1MB'\nfsync = off" } })).toEqual([
      'parameters: the value of "work_mem" must be one line',
    ]);
    expect(v({ parameters: { wal_level: 'minimal' } })).toEqual([
      'parameters: "wal_level" is managed by the operator',
    ]);
    expect(v({ parameters: { password_encryption: 'md5' } })).toEqual([
      'parameters: "password_encryption" is managed by the operator',
    ]);
    expect(v({ parameters: { synchronous_commit: 'local' } })).toEqual([
      'parameters: "synchronous_commit" could let a failover lose an acknowledged commit, and is refused',
    ]);
    expect(v({ parameters: { recovery_min_apply_delay: '1h', fsync: 'off' } })).toHaveLength(2);
    expect(v({ parameters: { 'nox.config_version': 'x' } })).toEqual([
      'parameters: "nox.config_version" is managed by the operator',
    ]);
    expect(v({ parameters: { 'Bad Name': '1' } })).toEqual([
      'parameters: "Bad Name" is not a postgresql.conf parameter name',
    ]);
    expect(v({ parameters: { max_wal_senders: '2' } })).toEqual([
      'parameters: max_wal_senders must be a whole number of at least 4 for 3 instances',
    ]);
    expect(v({ synchronous: { mode: 'Quorum', number: 3 } })[0]).toMatch(/^synchronous.number/);
    expect(v({ synchronous: { mode: 'Off', number: 5 } })).toEqual([]);
    expect(v({ failover: { enabled: true, delay: '200ms' } })[0]).toMatch(/at least 1s/);
    expect(v({ database: { name: 'postgres', owner: 'postgres' } })).toHaveLength(2);
    expect(v({ superuserSecretRef: { name: 's', key: 'k' }, appSecretRef: { name: 's', key: 'k' } })).toEqual(
      ['appSecretRef: must not be the superuser password'],
    );
  });

  it('parses durations', () => {
    expect(durationMs('1m30s')).toBe(90_000);
    expect(durationMs('500ms')).toBe(500);
    expect(durationMs('5 s')).toBeUndefined();
  });
});

describe('clusterOfPod', () => {
  it('maps a PostgresCluster pod to its cluster by labels, and nothing else', () => {
    expect(clusterOfPod({ metadata: { namespace: 'nox', labels: labelsOf('pg') } })).toEqual([
      { namespace: 'nox', name: 'pg' },
    ]);
    expect(
      clusterOfPod({ metadata: { namespace: 'nox', labels: { 'app.kubernetes.io/instance': 'pg' } } }),
    ).toEqual([]);
  });
});
