import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { checkContext, checkInput, routedPolicy } from '../../test/harness/checks.js';
import type { RawResource } from '../config/source.js';
import { compileSnapshot } from '../policy/compile.js';
import { DenyCachingStore } from '../quota/denyCache.js';
import { MemoryQuotaStore } from '../quota/memoryStore.js';
import type { QuotaStore } from '../quota/store.js';
import type { Identity } from '../request/identity.js';
import type { Outcome } from '../request/outcome.js';
import { QuotaStage } from './quota.js';

const quota = (name: string, spec: Record<string, unknown>): RawResource =>
  ({
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'QuotaPolicy',
    metadata: { name, namespace: 'ns' },
    spec,
    origin: 't',
  }) as RawResource;
const snapshot = compileSnapshot(
  {
    resources: [
      quota('enforced', {
        match: { paths: [{ value: '/e' }] },
        subject: [{ type: 'Header', name: 'x-user' }],
        tiers: [{ name: 'free', limits: [{ requests: 3, window: '1h' }] }],
        costs: [{ match: { paths: [{ value: '/e/heavy' }] }, cost: 3 }],
      }),
      quota('dry', {
        match: { paths: [{ value: '/d' }] },
        mode: 'DryRun',
        subject: [{ type: 'Header', name: 'x-user' }],
        tiers: [{ name: 'free', limits: [{ requests: 1, window: '1h' }] }],
      }),
    ],
    problems: [],
  },
  undefined,
  1,
);
const input = (path: string, headers: Record<string, string> = { 'x-user': 'u1' }) =>
  checkInput({ path, headers });
const person = (subject: string, method: Identity['method'] = 'jwt'): Identity => ({
  subject,
  provider: 'op',
  method,
  groups: [],
  roles: [],
  scopes: [],
  claims: {},
});
const ctx = () => checkContext({ snapshot, identity: person('op:ann') });
const run = (stage: QuotaStage, path: string, headers?: Record<string, string>) =>
  stage.run(input(path, headers), ctx());
const kinds = (outcomes: Outcome[]) =>
  outcomes.map((o) =>
    o.kind === 'deny' ? o.deny.code : o.kind === 'continue' && o.dryRunDeny ? 'dry-run-deny' : o.kind,
  );

describe('QuotaStage', () => {
  it('skips routes no QuotaPolicy covers', async () => {
    expect((await run(new QuotaStage(new MemoryQuotaStore(), new Registry()), '/other')).kind).toBe('skip');
  });

  it('weighs requests by the first matching cost rule', async () => {
    const stage = new QuotaStage(new MemoryQuotaStore(), new Registry());
    expect(kinds([await run(stage, '/e/heavy'), await run(stage, '/e/light')])).toEqual([
      'continue',
      'QUOTA_EXCEEDED',
    ]);
  });

  it('counts a path that reads several ways under every QuotaPolicy and cost any reading falls under', async () => {
    const stage = new QuotaStage(new MemoryQuotaStore(), new Registry());
    // As the route stage reads /E/Heavy (and /E/Heavy/) for a case-insensitive upstream: /e's quota, heavy's cost.
    const read = (path: string, pathReadings: string[]) =>
      stage.run(input(path), checkContext({ snapshot, identity: person('op:ann'), pathReadings }));
    expect(
      kinds([
        await read('/E/Heavy', ['/E/Heavy', '/e/heavy']),
        await read('/E/x/', ['/E/x/', '/E/x', '/e/x/', '/e/x']),
      ]),
    ).toEqual(['continue', 'QUOTA_EXCEEDED']);
  });

  it('in DryRun counts and reports, but never denies', async () => {
    const stage = new QuotaStage(new MemoryQuotaStore(), new Registry());
    const out = [await run(stage, '/d'), await run(stage, '/d'), await run(stage, '/d')];
    // DryRun charges like Enforce (so it shows what would happen), then reports instead of denying.
    expect(kinds(out)).toEqual(['continue', 'dry-run-deny', 'dry-run-deny']);
  });

  it('denies a request that lacks a part of the subject, naming it', async () => {
    const o = await run(new QuotaStage(new MemoryQuotaStore(), new Registry()), '/e', {});
    expect(o).toMatchObject({ kind: 'deny', deny: { code: 'QUOTA_SUBJECT_MISSING' } });
    if (o.kind === 'deny') expect(o.deny.reason).toContain('Header x-user');
  });

  it('turns a store failure into an error that fails closed unless the policy is Open', async () => {
    const broken: QuotaStore = {
      name: 'broken',
      take: () => Promise.reject(new Error('down')),
      close: async () => undefined,
    };
    const o = await run(new QuotaStage(broken, new Registry()), '/e');
    expect(o).toMatchObject({ kind: 'error', code: 'QUOTA_STORE_UNAVAILABLE', failOpen: false });
  });

  it('counts a Header part only for an authenticated caller, and per caller', async () => {
    const stage = new QuotaStage(new MemoryQuotaStore(), new Registry());
    const anonymous = await stage.run(input('/e', { 'x-user': 'made-up' }), checkContext({ snapshot }));
    expect(anonymous).toMatchObject({ kind: 'deny', deny: { code: 'QUOTA_SUBJECT_MISSING' } });
    if (anonymous.kind === 'deny') expect(anonymous.deny.reason).toContain('authenticated caller');
    // The same header value under two identities: two buckets, each with its own 3 requests.
    const as = (who: string) =>
      stage.run(input('/e/heavy', { 'x-user': 'shared' }), checkContext({ snapshot, identity: person(who) }));
    expect(kinds([await as('op:ann'), await as('op:bob'), await as('op:ann')])).toEqual([
      'continue',
      'continue',
      'QUOTA_EXCEEDED',
    ]);
  });
});

describe('QuotaStage subjects from verified identity', () => {
  const snap = compileSnapshot(
    {
      resources: [
        quota('by-key', {
          match: { paths: [{ value: '/k' }] },
          subject: [{ type: 'ApiKey', name: 'X-Api-Key' }],
          tiers: [{ name: 'free', limits: [{ requests: 2, window: '1h' }] }],
        }),
        quota('by-ip', {
          match: { paths: [{ value: '/ip' }] },
          subject: [{ type: 'SourceIP' }],
          tiers: [{ name: 'free', limits: [{ requests: 2, window: '1h' }] }],
        }),
        quota('daily', {
          match: { paths: [{ value: '/day' }] },
          subject: [{ type: 'User' }],
          tiers: [{ name: 'free', limits: [{ requests: 1, calendar: 'Day' }] }],
        }),
      ],
      problems: [],
    },
    undefined,
    2,
  );
  const keyed = routedPolicy({
    apiKeys: { header: 'x-api-key', selector: { app: 'x' }, key: 'api-key' },
  } as never);

  it('takes an ApiKey subject only from a key the identify stage verified from that header', async () => {
    const stage = new QuotaStage(new MemoryQuotaStore(), new Registry());
    // A made-up key on a route whose AccessPolicy does not verify keys: no bucket, a deny.
    const madeUp = await stage.run(
      checkInput({ path: '/k', headers: { 'x-api-key': 'made-up-1' } }),
      checkContext({ snapshot: snap }),
    );
    expect(madeUp).toMatchObject({ kind: 'deny', deny: { code: 'QUOTA_SUBJECT_MISSING' } });
    if (madeUp.kind === 'deny') expect(madeUp.deny.reason).toContain('no API key verified');
    // A JWT identity is not a verified key either.
    const jwt = await stage.run(
      checkInput({ path: '/k', headers: { 'x-api-key': 'made-up-2' } }),
      checkContext({ snapshot: snap, accessPolicy: keyed, identity: person('op:ann') }),
    );
    expect(jwt.kind).toBe('deny');
    // A verified key counts per Secret, whatever else the header carries.
    const verified = (value: string) =>
      stage.run(
        checkInput({ path: '/k', headers: { 'x-api-key': value } }),
        checkContext({
          snapshot: snap,
          accessPolicy: keyed,
          identity: person('apikey:team-a/app', 'apiKey'),
        }),
      );
    expect(kinds([await verified('k1'), await verified('k1 '), await verified('k2')])).toEqual([
      'continue',
      'continue',
      'QUOTA_EXCEEDED',
    ]);
  });

  it('counts an IPv4-mapped IPv6 address as its IPv4 address and IPv6 per /64', async () => {
    const stage = new QuotaStage(new MemoryQuotaStore(), new Registry());
    const from = (sourceAddress: string) =>
      stage.run(checkInput({ path: '/ip', sourceAddress }), checkContext({ snapshot: snap }));
    expect(
      kinds([await from('192.0.2.7'), await from('::ffff:192.0.2.7'), await from('::ffff:c000:207')]),
    ).toEqual(['continue', 'continue', 'QUOTA_EXCEEDED']);
    expect(
      kinds([
        await from('2001:db8:1:2::1'),
        await from('2001:DB8:1:2:ffff::9'),
        await from('2001:db8:1:2::abcd'),
      ]),
    ).toEqual(['continue', 'continue', 'QUOTA_EXCEEDED']);
    expect((await from('2001:db8:1:3::1')).kind).toBe('continue'); // another /64
    expect(await from('not-an-address')).toMatchObject({
      kind: 'deny',
      deny: { code: 'QUOTA_SUBJECT_MISSING' },
    });
  });

  it('forgets its local denials when a new policy snapshot is in force', async () => {
    const stage = new QuotaStage(
      new DenyCachingStore(new MemoryQuotaStore(), new Registry()),
      new Registry(),
    );
    const at = (s: typeof snap) =>
      stage.run(checkInput({ path: '/day' }), checkContext({ snapshot: s, identity: person('op:ann') }));
    expect(kinds([await at(snap), await at(snap)])).toEqual(['continue', 'QUOTA_EXCEEDED']);
    const raised = compileSnapshot(
      {
        resources: [
          quota('daily', {
            match: { paths: [{ value: '/day' }] },
            subject: [{ type: 'User' }],
            tiers: [{ name: 'free', limits: [{ requests: 5, calendar: 'Day' }] }],
          }),
        ],
        problems: [],
      },
      undefined,
      3,
    );
    stage.onSnapshot();
    expect(kinds([await at(raised)])).toEqual(['continue']);
  });
});
