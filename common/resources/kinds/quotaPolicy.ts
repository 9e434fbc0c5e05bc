import { ageColumn, type KindDefinition, readyColumn, reasonColumn } from '../kind.js';
import {
  arr,
  conditions,
  enforcementMode,
  enumOf,
  failureMode,
  int,
  listMap,
  obj,
  patterns,
  routeMatch,
  str,
} from '../schema.js';

const limit = obj(
  'One limit: at most `requests` (weighted by cost) per window. A request must pass every limit of its tier that matches it.',
  {
    name: str('Name shown in RateLimit-Policy and metrics; defaults to the window.', {
      pattern: patterns.dnsLabel,
      maxLength: 63,
    }),
    requests: int('Requests allowed per window.', { minimum: 1, maximum: 1_000_000_000 }),
    window: str(
      'Rolling window: a number and one unit of s, m, h, d or w, e.g. 1s, 90s, 1h, 1d, 1w (at most 366d).',
      {
        pattern: '^[1-9][0-9]{0,5}(s|m|h|d|w)$',
        maxLength: 8,
      },
    ),
    calendar: enumOf(
      'Calendar-aligned window in `timeZone` instead of a rolling one, for subscription quotas.',
      ['Day', 'Week', 'Month', 'Year'],
    ),
    match: routeMatch,
  },
  {
    required: ['requests'],
    rules: [
      {
        rule: 'has(self.window) != has(self.calendar)',
        message: 'exactly one of window or calendar must be set',
      },
    ],
  },
);

const tier = obj(
  'A tier: the limits that apply to its subjects.',
  {
    name: str('Tier name, e.g. free, pro.', { pattern: patterns.dnsLabel, maxLength: 63 }),
    limits: arr('Limits, all enforced at once.', limit, { minItems: 1, maxItems: 8 }),
  },
  { required: ['name', 'limits'] },
);

const subjectSource = obj(
  'One part of the quota key.',
  {
    type: enumOf(
      'User: the authenticated subject; Client: the OAuth2 client id; ApiKey: the key (hashed) in header `name`; SourceIP: the client address; Header or Claim: the value of header or token claim `name`.',
      ['User', 'Client', 'ApiKey', 'SourceIP', 'Header', 'Claim'],
    ),
    name: str('Header or claim name, for ApiKey, Header and Claim.', { maxLength: 128 }),
  },
  {
    required: ['type'],
    rules: [
      {
        rule: "!(self.type in ['ApiKey', 'Header', 'Claim']) || has(self.name)",
        message: 'name is required for ApiKey, Header and Claim',
        fieldPath: '.name',
        reason: 'FieldValueRequired',
      },
    ],
  },
);

export const quotaPolicy: KindDefinition = {
  kind: 'QuotaPolicy',
  plural: 'quotapolicies',
  singular: 'quotapolicy',
  shortNames: ['qp'],
  role: 'policy',
  description: 'Per-subject request quotas by tier, enforced by the Nox sidecar (GCRA in Redis Cluster).',
  spec: obj(
    'What is counted, for whom, and how much is allowed.',
    {
      match: routeMatch,
      mode: enforcementMode,
      failureMode: failureMode('the quota store (Redis)'),
      subject: arr(
        'The quota key: the combination of these parts. Requests without every part are denied (unless mode is DryRun).',
        subjectSource,
        {
          minItems: 1,
          maxItems: 4,
          default: [{ type: 'User' }],
        },
      ),
      tiers: listMap('Tiers by name.', tier, 'name', {
        minItems: 1,
        maxItems: 16,
        default: [{ name: 'free', limits: [{ requests: 100, window: '1h' }] }],
      }),
      defaultTier: str('Tier of subjects no other rule places.', {
        pattern: patterns.dnsLabel,
        maxLength: 63,
        default: 'free',
      }),
      tierFrom: obj(
        'How a subject’s tier is chosen, before defaultTier. An override set through the admin API wins over both.',
        {
          claim: str('Token claim whose value names the tier.', { maxLength: 128 }),
          groups: arr(
            'Group → tier, first match wins.',
            obj(
              'A group mapping.',
              {
                group: str('Group.', { maxLength: 253 }),
                tier: str('Tier.', { pattern: patterns.dnsLabel, maxLength: 63 }),
              },
              { required: ['group', 'tier'] },
            ),
            { maxItems: 32 },
          ),
        },
      ),
      costs: arr(
        'Requests matching a cost rule count more than 1 (first match wins).',
        obj(
          'A cost rule.',
          { match: routeMatch, cost: int('Weight.', { minimum: 1, maximum: 1000 }) },
          { required: ['match', 'cost'] },
        ),
        { maxItems: 32 },
      ),
      timeZone: str('IANA time zone for calendar windows.', {
        default: 'UTC',
        maxLength: 64,
        pattern: '^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$',
      }),
    },
    {
      rules: [
        {
          rule: 'self.tiers.exists(t, t.name == self.defaultTier)',
          message: 'defaultTier must name one of tiers',
          fieldPath: '.defaultTier',
        },
        {
          rule: '!has(self.tierFrom) || !has(self.tierFrom.groups) || self.tierFrom.groups.all(g, self.tiers.exists(t, t.name == g.tier))',
          message: 'every tierFrom.groups[].tier must name one of tiers',
          fieldPath: '.tierFrom.groups',
        },
      ],
    },
  ),
  status: obj('Observed state.', {
    observedGeneration: int('Generation the status describes.', { minimum: 0 }),
    conditions,
  }),
  printerColumns: [
    { name: 'Mode', type: 'string', jsonPath: '.spec.mode' },
    {
      name: 'Failure',
      type: 'string',
      jsonPath: '.spec.failureMode',
      description: 'Failure mode when Redis is unreachable.',
    },
    { name: 'Default-Tier', type: 'string', jsonPath: '.spec.defaultTier' },
    readyColumn,
    reasonColumn,
    ageColumn,
  ],
};
