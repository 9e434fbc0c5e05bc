import { describe, expect, it } from 'vitest';
import type { AccessPolicySpec } from '../../common/resources/types.gen.js';
import type { Identity } from '../request/identity.js';
import { compileAccessPolicy, evaluateAccess, type RequestFacts } from './accessPolicy.js';

const req: RequestFacts = {
  method: 'GET',
  host: 'api.example.com',
  path: '/api/orders',
  sourceAddress: '10.1.2.3',
};
const alice: Identity = {
  subject: 'corp:alice',
  provider: 'corp',
  method: 'jwt',
  email: 'alice@example.com',
  emailVerified: true,
  groups: ['staff'],
  roles: ['reader'],
  scopes: ['orders:read', 'profile'],
  claims: { department: 'sales', realm: { roles: ['x'] } },
};
const spec = (
  rules: AccessPolicySpec['rules'],
  defaultAction: 'Allow' | 'Deny' = 'Deny',
): AccessPolicySpec => ({
  mode: 'Enforce',
  pathCase: 'Unknown',
  audit: { record: 'All', allowSampleRate: 0.01 },
  identityHeaders: {
    user: 'x-nox-user',
    provider: 'x-nox-provider',
    email: 'x-nox-email',
    groups: 'x-nox-groups',
  },
  defaultAction,
  priority: 0,
  rules,
});
/** `null` is an anonymous caller (undefined would pick up the default, alice). */
const decide = (
  s: AccessPolicySpec,
  r = req,
  id: Identity | null = alice,
  now = new Date('2026-11-25T10:00:00Z'),
) => evaluateAccess(compileAccessPolicy('AccessPolicy/ns/p', s), r, id ?? undefined, now);

describe('evaluateAccess', () => {
  it('takes the first rule whose conditions all hold, else the default', () => {
    const s = spec([
      { name: 'deny-writes', action: 'Deny', when: { methods: ['POST'] } },
      { name: 'staff', action: 'Allow', when: { groups: ['staff'] } },
    ]);
    expect(decide(s).rule).toBe('staff');
    expect(decide(s, { ...req, method: 'POST' }).rule).toBe('deny-writes');
    expect(decide(s, req, { ...alice, groups: [] })).toEqual({ action: 'Deny', rule: 'default' });
  });

  it('never lets identity conditions hold for anonymous callers', () => {
    for (const when of [
      { groups: ['staff'] },
      { subjects: ['corp:alice'] },
      { claims: [{ name: 'department', operator: 'NotIn' as const, values: ['hr'] }] },
      { claims: [{ name: 'x', operator: 'DoesNotExist' as const }] },
      { authenticated: 'Authenticated' as const },
    ]) {
      expect(
        decide(spec([{ name: 'r', action: 'Allow', when }]), req, null).action,
        JSON.stringify(when),
      ).toBe('Deny');
    }
    expect(
      decide(spec([{ name: 'r', action: 'Allow', when: { authenticated: 'Anonymous' } }]), req, null).action,
    ).toBe('Allow');
  });

  it('matches subjects by qualified id or verified email only', () => {
    const s = spec([{ name: 'r', action: 'Allow', when: { subjects: ['alice@example.com'] } }]);
    expect(decide(s).action).toBe('Allow');
    expect(decide(s, req, { ...alice, emailVerified: false }).action).toBe('Deny');
  });

  it('evaluates claims with In, NotIn, Exists, DoesNotExist and nested names', () => {
    const c = (claims: NonNullable<NonNullable<AccessPolicySpec['rules']>[number]['when']>['claims']) =>
      decide(spec([{ name: 'r', action: 'Allow', when: { claims } }])).action;
    expect(c([{ name: 'department', operator: 'In', values: ['sales'] }])).toBe('Allow');
    expect(c([{ name: 'department', operator: 'NotIn', values: ['sales'] }])).toBe('Deny');
    expect(c([{ name: 'realm.roles', operator: 'In', values: ['x'] }])).toBe('Allow');
    expect(c([{ name: 'missing', operator: 'Exists' }])).toBe('Deny');
    expect(c([{ name: 'missing', operator: 'DoesNotExist' }])).toBe('Allow');
  });

  it('requires every listed scope', () => {
    expect(
      decide(spec([{ name: 'r', action: 'Allow', when: { scopes: ['orders:read', 'profile'] } }])).action,
    ).toBe('Allow');
    expect(
      decide(spec([{ name: 'r', action: 'Allow', when: { scopes: ['orders:read', 'orders:write'] } }]))
        .action,
    ).toBe('Deny');
  });

  it('requires every listed authentication method in the amr claim (RFC 8176)', () => {
    const s = spec([{ name: 'mfa', action: 'Allow', when: { authMethods: ['mfa', 'hwk'] } }]);
    const withAmr = (amr: unknown): Identity => ({ ...alice, claims: { ...alice.claims, amr } });
    expect(decide(s, req, withAmr(['pwd', 'hwk', 'mfa'])).action).toBe('Allow');
    expect(decide(s, req, withAmr(['pwd', 'mfa'])).action).toBe('Deny');
    expect(decide(s, req, withAmr('mfa hwk')).action).toBe('Deny'); // not a list: not an amr claim
    expect(decide(s, req, alice).action).toBe('Deny');
    expect(decide(s, req, null).action).toBe('Deny');
  });

  it('matches source CIDRs (v4 and v6), and an unknown source address never matches', () => {
    const s = spec([
      { name: 'office', action: 'Allow', when: { sourceCIDRs: ['10.1.0.0/16', '2001:db8::/32'] } },
    ]);
    expect(decide(s).action).toBe('Allow');
    expect(decide(s, { ...req, sourceAddress: '10.2.0.1' }).action).toBe('Deny');
    expect(decide(s, { ...req, sourceAddress: '2001:db8::1' }).action).toBe('Allow');
    expect(decide(s, { ...req, sourceAddress: '' }).action).toBe('Deny');
  });

  it('evaluates schedules in their time zone, including windows across midnight', () => {
    const office = spec([
      {
        name: 'r',
        action: 'Allow',
        when: {
          schedule: {
            timeZone: 'Europe/Amsterdam',
            days: ['Mon', 'Tue', 'Wed', 'Thu', 'Fri'],
            start: '08:00',
            end: '19:00',
          },
        },
      },
    ]);
    expect(decide(office, req, alice, new Date('2026-11-25T07:30:00Z')).action).toBe('Allow'); // Wed 08:30 CET
    expect(decide(office, req, alice, new Date('2026-11-25T06:30:00Z')).action).toBe('Deny'); // Wed 07:30 CET
    expect(decide(office, req, alice, new Date('2026-11-28T12:00:00Z')).action).toBe('Deny'); // Saturday
    const night = spec([
      {
        name: 'r',
        action: 'Allow',
        when: { schedule: { timeZone: 'UTC', days: ['Fri'], start: '22:00', end: '06:00' } },
      },
    ]);
    expect(decide(night, req, alice, new Date('2026-11-27T23:00:00Z')).action).toBe('Allow'); // Fri 23:00
    expect(decide(night, req, alice, new Date('2026-11-28T03:00:00Z')).action).toBe('Allow'); // Sat 03:00, began Friday
    expect(decide(night, req, alice, new Date('2026-11-27T03:00:00Z')).action).toBe('Deny'); // Fri 03:00, began Thursday
  });

  it('matches hosts with wildcards and paths exactly or by prefix', () => {
    const s = spec([
      {
        name: 'r',
        action: 'Allow',
        when: { hosts: ['*.example.com'], paths: [{ type: 'Exact', value: '/api/orders' }] },
      },
    ]);
    expect(decide(s).action).toBe('Allow');
    expect(decide(s, { ...req, path: '/api/orders/1' }).action).toBe('Deny');
    expect(decide(s, { ...req, host: 'example.org' }).action).toBe('Deny');
  });

  it('returns the challenge parameters of a Challenge rule', () => {
    const v = decide(
      spec([{ name: 'r', action: 'Challenge', challenge: { prompt: 'login', maxAge: '10m' } }]),
    );
    expect(v).toEqual({ action: 'Challenge', rule: 'r', challenge: { prompt: 'login', maxAge: '10m' } });
  });
  it('covers HEAD with a rule that names GET', () => {
    const s = spec([{ name: 'no-reads', action: 'Deny', when: { methods: ['GET'] } }], 'Allow');
    expect(decide(s, { ...req, method: 'HEAD' })).toEqual({ action: 'Deny', rule: 'no-reads' });
    expect(decide(s, { ...req, method: 'POST' }).action).toBe('Allow');
  });

  it('fails closed on a source condition it cannot evaluate: a Deny rule holds, an Allow rule does not', () => {
    const noAddress = { ...req, sourceAddress: '' };
    const deny = spec(
      [{ name: 'block-net', action: 'Deny', when: { sourceCIDRs: ['10.0.0.0/8'] } }],
      'Allow',
    );
    expect(decide(deny, noAddress)).toEqual({ action: 'Deny', rule: 'block-net' });
    expect(decide(deny, { ...req, sourceAddress: '192.0.2.1' }).action).toBe('Allow');
    const allow = spec([{ name: 'office', action: 'Allow', when: { sourceCIDRs: ['10.0.0.0/8'] } }]);
    expect(decide(allow, noAddress).action).toBe('Deny');
  });

  it('refuses an empty list in a condition instead of reading it as "anyone"', () => {
    for (const when of [
      { groups: [] },
      { subjects: [] },
      { methods: [] },
      { paths: [] },
      { sourceCIDRs: [] },
    ])
      expect(() =>
        compileAccessPolicy('AccessPolicy/ns/p', spec([{ name: 'r', action: 'Allow', when }])),
      ).toThrow(/spec\.rules\[0\]\.when\.\w+: is empty/);
  });
});
