import { describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../../common/resources/types.gen.js';
import { FENCING_ANNOTATION, ROLE_LABEL } from './failoverRules.js';
import { BOOTSTRAP_ANNOTATION } from './instanceManager.js';
import type { InstanceObservation } from './instances.js';
import {
  type InstanceView,
  isHealthyPrimary,
  orphanSlots,
  otherPrimaries,
  planFailover,
  podPatches,
  scaleDownProblem,
} from './roles.js';
import { computeStatus } from './status.js';

const view = (
  pod: string,
  obs: InstanceObservation | undefined,
  extra: Partial<InstanceView> = {},
): InstanceView => ({
  pod,
  ordinal: Number(pod.split('-').at(-1)),
  ip: `127.0.0.${Number(pod.split('-').at(-1)) + 2}`,
  ready: true,
  running: true,
  labels: {},
  annotations: {},
  ...(obs ? { obs } : {}),
  ...extra,
});
const replica = (receivedLsn: string, replayedLsn = receivedLsn): InstanceObservation => ({
  reachable: true,
  inRecovery: true,
  receivedLsn,
  replayedLsn,
  walReceiver: 'streaming',
});
const primary: InstanceObservation = {
  reachable: true,
  inRecovery: false,
  currentLsn: '0/5000000',
  timeline: 1,
};
const down: InstanceObservation = { reachable: false, error: 'connect ECONNREFUSED' };

describe('podPatches', () => {
  it('labels the designated primary, the others replicas, and fences the fenced', () => {
    const views = [view('db-0', down), view('db-1', replica('0/1')), view('db-2', replica('0/1'))];
    expect(podPatches(views, 'db-1', new Set(['db-0']))).toEqual([
      {
        pod: 'db-0',
        patch: {
          metadata: { annotations: { [FENCING_ANNOTATION]: 'true' }, labels: { [ROLE_LABEL]: 'fenced' } },
        },
      },
      { pod: 'db-1', patch: { metadata: { labels: { [ROLE_LABEL]: 'primary' } } } },
      { pod: 'db-2', patch: { metadata: { labels: { [ROLE_LABEL]: 'replica' } } } },
    ]);
  });
  it('sends nothing when the pods already carry their roles, and unfences a rejoining instance', () => {
    const views = [
      view('db-0', replica('0/1'), {
        labels: { [ROLE_LABEL]: 'fenced' },
        annotations: { [FENCING_ANNOTATION]: 'true' },
      }),
      view('db-1', primary, { labels: { [ROLE_LABEL]: 'primary' } }),
    ];
    expect(podPatches(views, 'db-1', new Set())).toEqual([
      {
        pod: 'db-0',
        patch: {
          metadata: { annotations: { [FENCING_ANNOTATION]: null }, labels: { [ROLE_LABEL]: 'replica' } },
        },
      },
    ]);
    expect(podPatches(views.slice(1), 'db-1', new Set())).toEqual([]);
  });

  it('lets only the first primary of a new cluster initialise a database, and takes the permission back', () => {
    const views = [view('db-0', undefined), view('db-1', undefined)];
    expect(podPatches(views, 'db-0', new Set(), 'db-0')[0]).toEqual({
      pod: 'db-0',
      patch: {
        metadata: { labels: { [ROLE_LABEL]: 'primary' }, annotations: { [BOOTSTRAP_ANNOTATION]: 'allowed' } },
      },
    });
    const formed = [
      view('db-0', primary, {
        labels: { [ROLE_LABEL]: 'primary' },
        annotations: { [BOOTSTRAP_ANNOTATION]: 'allowed' },
      }),
    ];
    expect(podPatches(formed, 'db-0', new Set())).toEqual([
      { pod: 'db-0', patch: { metadata: { annotations: { [BOOTSTRAP_ANNOTATION]: null } } } },
    ]);
  });
});

describe('planFailover', () => {
  it('promotes the replica that received the most WAL, even if it replayed less', () => {
    const plan = planFailover(
      [view('db-1', replica('0/3000000', '0/1000000')), view('db-2', replica('0/2000000'))],
      2,
      1,
    );
    expect(plan).toMatchObject({ kind: 'promote', target: 'db-1' });
  });
  it('with synchronous replication waits until enough replicas can be read', () => {
    // ANY 1 of 2 replicas: a commit may be on either, so both must be read.
    expect(planFailover([view('db-1', replica('0/3')), view('db-2', down)], 2, 1)).toMatchObject({
      kind: 'wait',
      reason: 'NotEnoughReplicas',
    });
    // Asynchronous: any readable replica will do.
    expect(planFailover([view('db-1', replica('0/3')), view('db-2', down)], 2, 0)).toMatchObject({
      kind: 'promote',
      target: 'db-1',
    });
  });
  it('never promotes a fenced instance or one that is not in recovery', () => {
    const fenced = view('db-1', replica('0/9'), { annotations: { [FENCING_ANNOTATION]: 'true' } });
    expect(planFailover([fenced, view('db-2', replica('0/1'))], 2, 0)).toMatchObject({ target: 'db-2' });
    expect(planFailover([view('db-1', primary)], 1, 0)).toMatchObject({ kind: 'wait' });
  });
});

describe('primary health', () => {
  it('needs a ready pod answering as a primary', () => {
    expect(isHealthyPrimary(view('db-0', primary))).toBe(true);
    expect(isHealthyPrimary(view('db-0', primary, { ready: false }))).toBe(false);
    expect(isHealthyPrimary(view('db-0', replica('0/1')))).toBe(false);
    expect(isHealthyPrimary(view('db-0', down))).toBe(false);
  });
  it('finds every other instance answering as a primary', () => {
    expect(
      otherPrimaries([view('db-0', primary), view('db-1', primary), view('db-2', down)], 'db-1'),
    ).toEqual(['db-0']);
  });
});

describe('computeStatus', () => {
  const cluster = {
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'PostgresCluster',
    metadata: { name: 'db', namespace: 'ns', generation: 2 },
    spec: { instances: 3, image: 'postgres:15' },
  } as PostgresCluster;
  const now = new Date('2026-11-25T12:00:00Z');
  it('is Ready with lag per replica when the primary writes and both replicas stream', () => {
    const s = computeStatus({
      cluster,
      views: [view('db-0', primary), view('db-1', replica('0/4000000')), view('db-2', replica('0/5000000'))],
      designated: 'db-0',
      fenced: new Set(),
      currentPrimary: 'db-0',
      now,
    });
    expect(s.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'True',
      observedGeneration: 2,
    });
    expect(s.instances?.map((i) => [i.pod, i.role, i.lagBytes])).toEqual([
      ['db-0', 'primary', undefined],
      ['db-1', 'replica', 0x1000000],
      ['db-2', 'replica', 0],
    ]);
    expect(s.timeline).toBe(1);
  });
  it('is Degraded with the reason when the primary is lost after the cluster had one', () => {
    const s = computeStatus({
      cluster,
      views: [
        view('db-0', down, { ready: false }),
        view('db-1', replica('0/1')),
        view('db-2', replica('0/1')),
      ],
      designated: 'db-0',
      fenced: new Set(),
      currentPrimary: 'db-0',
      now,
    });
    expect(s.conditions?.find((c) => c.type === 'Degraded')).toMatchObject({
      status: 'True',
      reason: 'PrimaryUnavailable',
    });
  });
  it('is neither Ready nor Degraded while bootstrapping', () => {
    const s = computeStatus({
      cluster,
      views: [],
      designated: undefined,
      fenced: new Set(),
      currentPrimary: undefined,
      now,
    });
    expect(s.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'False',
      reason: 'Bootstrapping',
    });
    expect(s.conditions?.find((c) => c.type === 'Degraded')).toMatchObject({
      status: 'False',
      reason: 'NotFormed',
    });
  });
});

describe('scale-down', () => {
  it('drops only the slots of this cluster’s instances past spec.instances', () => {
    expect(
      orphanSlots(['nox_db_0', 'nox_db_1', 'nox_db_2', 'nox_db_10', 'nox_other_2', 'backup'], 'db', 2),
    ).toEqual(['nox_db_2', 'nox_db_10']);
  });
  it('waits while the primary is among the instances to remove', () => {
    expect(scaleDownProblem('db-2', 2)).toMatchObject({ reason: 'ScaleDownBlocked' });
    expect(scaleDownProblem('db-1', 2)).toBeUndefined();
    expect(scaleDownProblem(undefined, 1)).toBeUndefined();
  });
});
