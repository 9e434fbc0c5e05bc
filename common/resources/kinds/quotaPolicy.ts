import { ageColumn, type KindDefinition, readyColumn, reasonColumn } from '../kind.js';
import {
  arr,
  celString,
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
  timeZone,
} from '../schema.js';

const windowPattern = '^[1-9][0-9]{0,5}(s|m|h|d|w)$';
const seconds = "{'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}";

/** The name a limit is known by: its name, else its window (1h), else its calendar (day). */
const limitName = (l: string) =>
  `(has(${l}.name) ? ${l}.name : (has(${l}.window) ? ${l}.window : (has(${l}.calendar) ? {'Day': 'day', 'Week': 'week', 'Month': 'month', 'Year': 'year'}[${l}.calendar] : '')))`;

const limit = obj(
  'One limit: at most `requests` (weighted by cost) per window. A request must pass every limit of its tier that matches it.',
  {
    name: str(
      'Name shown in RateLimit-Policy and metrics; defaults to the window (e.g. 1h) or the calendar in lower case (e.g. day). Unique within the tier, defaults included.',
      {
        pattern: patterns.dnsLabel,
        maxLength: 63,
      },
    ),
    requests: int('Requests allowed per window.', { minimum: 1, maximum: 1_000_000_000 }),
    window: str(
      'Rolling window: a number and one unit of s, m, h, d or w, e.g. 1s, 90s, 1h, 1d, 1w (at most 366d).',
      {
        pattern: windowPattern,
        maxLength: 8,
        'x-kubernetes-validations': [
          {
            // The guard leaves a malformed value to the pattern's error.
            rule: `!self.matches(${celString(windowPattern)}) || int(self.substring(0, size(self) - 1)) * ${seconds}[self.substring(size(self) - 1)] <= 31622400`,
            message: 'window must not be longer than 366d (52w)',
          },
        ],
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
  {
    required: ['name', 'limits'],
    rules: [
      {
        rule: `self.limits.all(a, self.limits.exists_one(b, ${limitName('b')} == ${limitName('a')}))`,
        message:
          'limit names must be unique within a tier; a limit without a name is named by its window (e.g. 1h) or calendar (e.g. day)',
        fieldPath: '.limits',
      },
    ],
  },
);

const subjectSource = obj(
  'One part of the quota key.',
  {
    type: enumOf(
      "User: the authenticated subject; Client: the OAuth2 client id; Claim: the verified token claim `name`; ApiKey: the key the identify stage verified from header `name` (AccessPolicy spec.apiKeys), counted per key Secret; SourceIP: the client address Envoy observed (IPv4-mapped IPv6 as IPv4, other IPv6 per /64); Header: the value of header `name`, only for an authenticated caller and keyed with the caller's identity. A missing or unverified part denies the request (QUOTA_SUBJECT_MISSING) unless mode is DryRun.",
      ['User', 'Client', 'ApiKey', 'SourceIP', 'Header', 'Claim'],
    ),
    name: str('Header or claim name, for ApiKey, Header and Claim; a header name is an HTTP token.', {
      maxLength: 128,
      minLength: 1,
    }),
  },
  {
    required: ['type'],
    rules: [
      {
        rule: `!(self.type in ['ApiKey', 'Header']) || !has(self.name) || self.name.matches(${celString(patterns.headerName)})`,
        message: 'name must be an HTTP header name for ApiKey and Header',
        fieldPath: '.name',
      },
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
      timeZone: timeZone('Time zone of calendar windows.'),
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
