import { describe, expect, it } from 'vitest';
import type { RedisCluster } from '../../common/resources/types.gen.js';
import {
  CONFIG_HASH_ANNOTATION,
  childList,
  desiredChildren,
  redisConf,
  selectorLabels,
  validateSpec,
} from './desired.js';

function cluster(spec: Partial<RedisCluster['spec']> = {}): RedisCluster {
  return {
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'RedisCluster',
    metadata: { name: 'quota', namespace: 'nox', uid: 'u-1', generation: 3 },
    spec: { masters: 3, replicasPerMaster: 1, image: 'redis:7.0', ...spec },
  };
}

describe('RedisCluster desired children', () => {
  it('are a Secret, ConfigMap, two Services, a StatefulSet and a PDB, all owned by the cluster', () => {
    const c = desiredChildren(cluster(), { generatedPassword: 's3cret' });
    const list = childList(c);
    expect(list.map((o) => `${o.kind}/${o.metadata?.name}`)).toEqual([
      'Secret/quota-auth',
      'ConfigMap/quota-config',
      'Service/quota-nodes',
      'Service/quota',
      'PodDisruptionBudget/quota',
      'StatefulSet/quota',
    ]);
    for (const o of list) {
      expect(o.metadata?.namespace).toBe('nox');
      expect(o.metadata?.ownerReferences).toEqual([
        {
          apiVersion: 'nox.dev/v1alpha1',
          kind: 'RedisCluster',
          name: 'quota',
          uid: 'u-1',
          controller: true,
          blockOwnerDeletion: true,
        },
      ]);
      expect(o.metadata?.labels?.['app.kubernetes.io/part-of']).toBe('nox');
    }
    expect(Buffer.from(c.secret!.data!.password!, 'base64').toString()).toBe('s3cret');
  });

  it('size the StatefulSet as masters × (1 + replicas), Parallel, with a readiness probe', () => {
    const { statefulSet, headless, pdb } = desiredChildren(cluster({ masters: 4, replicasPerMaster: 2 }), {
      generatedPassword: 'x',
    });
    const spec = statefulSet.spec!;
    expect(spec.replicas).toBe(12);
    expect(spec.podManagementPolicy).toBe('Parallel');
    expect(spec.serviceName).toBe('quota-nodes');
    expect(spec.selector.matchLabels).toEqual(selectorLabels('quota'));
    const container = spec.template.spec!.containers[0]!;
    expect(container.readinessProbe?.exec?.command?.join(' ')).toContain('ping');
    expect(container.args).toEqual(expect.arrayContaining(['--cluster-announce-ip', '$(POD_IP)']));
    expect(container.env?.find((e) => e.name === 'POD_IP')?.valueFrom?.fieldRef?.fieldPath).toBe(
      'status.podIP',
    );
    expect(container.env?.find((e) => e.name === 'REDIS_PASSWORD')?.valueFrom?.secretKeyRef).toEqual({
      name: 'quota-auth',
      key: 'password',
    });
    expect(spec.template.spec!.volumes?.find((v) => v.name === 'data')?.emptyDir).toEqual({});
    expect(spec.volumeClaimTemplates).toBeUndefined();
    expect(headless.spec?.clusterIP).toBe('None');
    expect(headless.spec?.publishNotReadyAddresses).toBe(true);
    expect(pdb.spec?.maxUnavailable).toBe(1);
  });

  it('use the referenced Secret instead of generating one, and a PVC template with storage', () => {
    const c = desiredChildren(
      cluster({ passwordSecretRef: { name: 'mine', key: 'pw' }, storage: { size: '1Gi' } }),
    );
    expect(c.secret).toBeUndefined();
    const sts = c.statefulSet.spec!;
    expect(
      sts.template.spec!.containers[0]!.env?.find((e) => e.name === 'REDIS_PASSWORD')?.valueFrom
        ?.secretKeyRef,
    ).toEqual({ name: 'mine', key: 'pw' });
    expect(sts.volumeClaimTemplates?.[0]?.spec?.resources?.requests).toEqual({ storage: '1Gi' });
    expect(sts.template.spec!.volumes?.some((v) => v.name === 'data')).toBe(false);
  });

  it('write redis.conf in cluster mode with AOF per spec, user settings in, operator settings last', () => {
    const conf = redisConf(
      cluster({
        persistence: { appendOnly: false, appendFsync: 'always' },
        config: { 'cluster-node-timeout': '3000', 'maxmemory-policy': 'allkeys-lru' },
      }),
    );
    const lines = conf.split('\n');
    expect(lines).toContain('cluster-enabled yes');
    expect(lines).toContain('appendonly no');
    expect(lines).toContain('appendfsync always');
    expect(lines).toContain('cluster-node-timeout 3000');
    expect(lines).not.toContain('cluster-node-timeout 5000');
    expect(lines).toContain('maxmemory-policy allkeys-lru');
    expect(conf).not.toMatch(/requirepass|masterauth|^dir /m);
  });

  it('roll the pods when redis.conf changes, and only then', () => {
    const hash = (c: RedisCluster) =>
      desiredChildren(c, { generatedPassword: 'x' }).statefulSet.spec!.template.metadata!.annotations![
        CONFIG_HASH_ANNOTATION
      ];
    expect(hash(cluster())).toBe(hash(cluster()));
    expect(hash(cluster({ config: { 'maxmemory-policy': 'noeviction' } }))).not.toBe(hash(cluster()));
  });

  it('refuse settings the schema cannot catch', () => {
    expect(validateSpec(cluster().spec)).toEqual([]);
    expect(validateSpec(cluster({ config: { 'maxmemory-policy': 'a\nrequirepass x' } }).spec)).toEqual([
      'config: the value of "maxmemory-policy" must be one line',
    ]);
    expect(validateSpec(cluster({ config: { dir: '/tmp' } }).spec)).toEqual([
      'config: "dir" is managed by the operator',
    ]);
  });
});

describe('clusterOfPod', () => {
  it('maps a RedisCluster pod to its cluster by labels, and nothing else', async () => {
    const { clusterOfPod, labelsOf } = await import('./desired.js');
    expect(clusterOfPod({ metadata: { namespace: 'nox', labels: labelsOf('quota') } })).toEqual([
      { namespace: 'nox', name: 'quota' },
    ]);
    expect(
      clusterOfPod({ metadata: { namespace: 'nox', labels: { 'app.kubernetes.io/instance': 'x' } } }),
    ).toEqual([]);
  });
});
