import { describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../../common/resources/types.gen.js';
import { FENCING_ANNOTATION, ROLE_LABEL } from './failoverRules.js';
import { BOOTSTRAP_ANNOTATION } from './instanceManager.js';
import type { InstanceObservation } from './instances.js';
import {
  failoverBlocked,
  type InstanceView,
  isHealthyPrimary,
  orphanSlots,
  otherPrimaries,
  planFailover,
  planPromotion,
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

describe('failoverBlocked (before the lost primary is fenced)', () => {
  const down: InstanceObservation = { reachable: false, refused: true };
  it('does not fence while too few replicas are back to promote one (a total outage)', () => {
    const none = failoverBlocked([view('db-0', down), view('db-2', down)], 2, 1);
    expect(none).toMatchObject({ reason: 'NotEnoughReplicas' });
    expect(none?.message).toContain('0 of 2 replicas');
    // ANY 1 of 2: both must be read before one can be known to hold every acknowledged commit.
    expect(failoverBlocked([view('db-0', replica('0/5')), view('db-2', down)], 2, 1)?.message).toContain(
      '1 of 2 replicas can be read (db-0)',
    );
    expect(
      failoverBlocked([view('db-0', replica('0/5')), view('db-2', replica('0/6'))], 2, 1),
    ).toBeUndefined();
    // ANY 2 of 2, or asynchronous: one will do.
    expect(failoverBlocked([view('db-0', replica('0/5')), view('db-2', down)], 2, 2)).toBeUndefined();
    expect(failoverBlocked([view('db-0', replica('0/5')), view('db-2', down)], 2, 0)).toBeUndefined();
    // A single instance has nothing to fail over to.
    expect(failoverBlocked([], 0, 0)).toMatchObject({ reason: 'NotEnoughReplicas' });
  });
});

describe('planPromotion (the one safety check before any promotion)', () => {
  const c = (
    pod: string,
    lsn: string | undefined,
    timeline: number | undefined,
    detached = true,
    more: { settled?: boolean; replayedLsn?: string } = {},
  ) => ({
    pod,
    detached,
    settled: more.settled ?? true,
    ...(lsn ? { receivedLsn: lsn } : {}),
    ...(more.replayedLsn ? { replayedLsn: more.replayedLsn } : {}),
    ...(timeline !== undefined ? { timeline } : {}),
  });
  const base = { totalReplicas: 2, syncNumber: 1, timeline: 3, oldPrimaryDown: false };

  it('promotes the most advanced detached replica once enough are detached that the lost primary cannot gather an acknowledgement', () => {
    expect(planPromotion({ ...base, candidates: [c('db-1', '0/5', 3), c('db-2', '0/7', 3)] })).toMatchObject({
      kind: 'promote',
      target: 'db-2',
    });
  });

  it('waits while a replica still streams from the lost primary (it could still acknowledge a commit)', () => {
    // ANY 1 of 2: with db-2 attached the lost primary, alive behind a partition, can still
    // acknowledge commits that db-1 never receives.
    const plan = planPromotion({ ...base, candidates: [c('db-1', '0/9', 3), c('db-2', '0/5', 3, false)] });
    expect(plan).toMatchObject({ kind: 'wait', reason: 'ReplicasStillAttached' });
    expect(plan.kind === 'wait' && plan.message).toContain('db-2');
    // Unreachable: nothing proves what it holds.
    expect(planPromotion({ ...base, candidates: [c('db-1', '0/9', 3)] })).toMatchObject({
      kind: 'wait',
      reason: 'NotEnoughReplicas',
    });
  });

  it('waits while a detached replica still replays the WAL on its disk (its positions are not final yet)', () => {
    // cc25: db-2 had just restarted; read mid-replay it looked behind db-0, though it held more.
    const replaying = [
      c('db-0', '0/7000000', 2, true, { replayedLsn: '0/7AF8E10' }),
      c('db-2', '0/7000000', 2, true, { replayedLsn: '0/7A00000', settled: false }),
    ];
    const plan = planPromotion({ ...base, timeline: 2, candidates: replaying });
    expect(plan).toMatchObject({ kind: 'wait', reason: 'ReplayInProgress' });
    expect(plan.kind === 'wait' && plan.message).toContain('db-2');
    const settled = [replaying[0]!, c('db-2', '0/7000000', 2, true, { replayedLsn: '0/7C4AAC8' })];
    expect(planPromotion({ ...base, timeline: 2, candidates: settled })).toMatchObject({
      kind: 'promote',
      target: 'db-2',
    });
  });

  it('counts a replica that restarted detached (nothing received since) by the WAL it replayed', () => {
    const plan = planPromotion({
      ...base,
      candidates: [c('db-1', '0/5000', 3), c('db-2', undefined, 3, true, { replayedLsn: '0/6000' })],
    });
    expect(plan).toMatchObject({ kind: 'promote', target: 'db-2' });
    expect(plan.kind === 'promote' && plan.reason).toContain('holds WAL to 0/6000');
  });

  it('counts attached replicas when the lost primary is reported down (it acknowledges nothing more)', () => {
    expect(
      planPromotion({
        ...base,
        oldPrimaryDown: true,
        candidates: [c('db-1', '0/9', 3, false), c('db-2', '0/5', 3, false)],
      }),
    ).toMatchObject({ kind: 'promote', target: 'db-1' });
  });

  it('never promotes, or counts, a replica stranded on an older timeline, however far its LSN', () => {
    // db-2 holds more WAL by position, but of timeline 2: the commits of timeline 3 are on db-1.
    const plan = planPromotion({ ...base, candidates: [c('db-1', '0/5', 3), c('db-2', '9/0', 2)] });
    expect(plan).toMatchObject({ kind: 'promote', target: 'db-1' });
    // Stranded, it acknowledged none of the lost primary's commits: db-1 alone is enough.
    expect(plan.kind === 'promote' && plan.reason).toContain('1 of 1 replicas');
    // With 3 replicas, ANY 2: the stranded one leaves 2 possible, of which 1 must be read.
    expect(
      planPromotion({
        ...base,
        totalReplicas: 3,
        syncNumber: 2,
        candidates: [c('db-1', '0/5', 3), c('db-2', '9/0', 2)],
      }),
    ).toMatchObject({ kind: 'promote', target: 'db-1' });
  });

  it('refuses to promote when a replica is on a newer timeline than the primary it replaces', () => {
    expect(planPromotion({ ...base, candidates: [c('db-1', '0/5', 3), c('db-2', '0/1', 4)] })).toMatchObject({
      kind: 'wait',
      reason: 'TimelineDiverged',
    });
  });

  it('without a recorded timeline, takes the newest a replica holds', () => {
    const { timeline: _, ...noTimeline } = base;
    expect(
      planPromotion({ ...noTimeline, candidates: [c('db-1', '0/5', 3), c('db-2', '9/0', 2)] }),
    ).toMatchObject({ kind: 'promote', target: 'db-1' });
    expect(planPromotion({ ...noTimeline, candidates: [c('db-2', '9/0', undefined)] })).toMatchObject({
      kind: 'wait',
      reason: 'NotEnoughReplicas',
    });
  });

  it('keeps the designated replica unless another is ahead of it', () => {
    const candidates = [c('db-1', '0/7', 3), c('db-2', '0/7', 3)];
    expect(planPromotion({ ...base, candidates, preferred: 'db-2' })).toMatchObject({ target: 'db-2' });
    expect(
      planPromotion({ ...base, candidates: [c('db-1', '0/8', 3), c('db-2', '0/7', 3)], preferred: 'db-2' }),
    ).toMatchObject({ target: 'db-1' });
  });

  it('never counts a replica whose position or timeline cannot be read', () => {
    expect(
      planPromotion({ ...base, candidates: [c('db-1', undefined, 3), c('db-2', '0/7', undefined)] }),
    ).toMatchObject({ kind: 'wait' });
  });

  it('with more synchronous standbys, fewer replicas need to be detached', () => {
    const three = { ...base, totalReplicas: 3 };
    const one = [c('db-1', '0/5', 3), c('db-2', '0/6', 3, false), c('db-3', '0/6', 3, false)];
    expect(planPromotion({ ...three, syncNumber: 3, candidates: one })).toMatchObject({ target: 'db-1' });
    expect(planPromotion({ ...three, syncNumber: 2, candidates: one })).toMatchObject({ kind: 'wait' });
    expect(
      planPromotion({
        ...three,
        syncNumber: 2,
        candidates: [...one.slice(0, 2).map((x) => ({ ...x, detached: true })), one[2]!],
      }),
    ).toMatchObject({ target: 'db-2' });
  });
});
