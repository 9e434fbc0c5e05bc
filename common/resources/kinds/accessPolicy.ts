import { ageColumn, type KindDefinition, readyColumn, reasonColumn } from '../kind.js';
import {
  arr,
  conditions,
  duration,
  enforcementMode,
  enumOf,
  httpMethods,
  int,
  listMap,
  mapOf,
  obj,
  pathMatch,
  patterns,
  routeMatch,
  set,
  str,
} from '../schema.js';

const strings = (description: string, maxLength = 253) =>
  set(description, str('Value.', { maxLength }), { maxItems: 32 });

const claimCondition = obj(
  'A condition on a token claim.',
  {
    name: str('Claim name; nested claims with dots, e.g. realm_access.roles.', { maxLength: 128 }),
    operator: enumOf(
      'In: the claim (or one of its values) is in values; NotIn: none is; Exists / DoesNotExist: presence.',
      ['In', 'NotIn', 'Exists', 'DoesNotExist'],
      { default: 'In' },
    ),
    values: strings('Values for In and NotIn.', 1024),
  },
  {
    required: ['name'],
    rules: [
      {
        rule: "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
        message: 'values are required for In and NotIn, and forbidden for Exists and DoesNotExist',
        fieldPath: '.values',
      },
    ],
  },
);

const schedule = obj(
  'A weekly time window.',
  {
    timeZone: str('IANA time zone.', {
      default: 'UTC',
      maxLength: 64,
      pattern: '^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$',
    }),
    days: set(
      'Days of the week; empty means every day.',
      enumOf('Day.', ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun']),
      { maxItems: 7 },
    ),
    start: str('Start, HH:MM (inclusive).', { pattern: patterns.clock, maxLength: 5 }),
    end: str('End, HH:MM (exclusive); an end before start spans midnight.', {
      pattern: patterns.clock,
      maxLength: 5,
    }),
  },
  {
    required: ['start', 'end'],
    rules: [{ rule: 'self.start != self.end', message: 'start and end must differ' }],
  },
);

const when = obj(
  'Conditions, all of which must hold. An absent field always holds. Identity fields never hold for anonymous requests.',
  {
    subjects: strings('Provider-qualified subjects ("<provider>:<sub>") or verified emails.'),
    providers: strings('OAuth2Provider names.', 63),
    groups: strings('Any of these groups.'),
    roles: strings('Any of these roles.'),
    scopes: strings('All of these scopes.'),
    claims: arr('Claim conditions.', claimCondition, { maxItems: 16 }),
    authenticated: enumOf('Authenticated: a caller was identified; Anonymous: none was.', [
      'Authenticated',
      'Anonymous',
    ]),
    methods: set('HTTP methods.', enumOf('Method.', httpMethods), { maxItems: 9 }),
    paths: arr('Paths.', pathMatch, { maxItems: 32 }),
    hosts: set('Hosts.', str('Host.', { pattern: patterns.hostname }), { maxItems: 32 }),
    sourceCIDRs: set('Client address ranges.', str('CIDR.', { pattern: patterns.cidr, maxLength: 64 }), {
      maxItems: 32,
    }),
    schedule,
  },
);

const rule = obj(
  'A rule. Rules are evaluated in order; the first whose conditions hold decides.',
  {
    name: str('Rule name, reported in decisions and metrics.', { pattern: patterns.dnsLabel, maxLength: 63 }),
    action: enumOf(
      'Allow, Deny, or Challenge (send the user back to the provider for a fresh or stronger login).',
      ['Allow', 'Deny', 'Challenge'],
    ),
    when,
    challenge: obj('Step-up parameters for Challenge.', {
      prompt: enumOf('OIDC prompt.', ['login', 'consent', 'select_account'], { default: 'login' }),
      acrValues: strings('Requested authentication context class references.', 256),
      maxAge: duration('Maximum age of the authentication.'),
    }),
  },
  {
    required: ['name', 'action'],
    rules: [
      {
        rule: "!has(self.challenge) || self.action == 'Challenge'",
        message: 'challenge only applies to action Challenge',
        fieldPath: '.challenge',
        reason: 'FieldValueForbidden',
      },
    ],
  },
);

export const accessPolicy: KindDefinition = {
  kind: 'AccessPolicy',
  plural: 'accesspolicies',
  singular: 'accesspolicy',
  shortNames: ['ap'],
  role: 'policy',
  description:
    'Who may call which routes: ordered Allow/Deny/Challenge rules over identity, request and time.',
  spec: obj('Routes, accepted identities, and rules.', {
    match: routeMatch,
    mode: enforcementMode,
    providers: set(
      'OAuth2Providers (in this namespace) whose tokens and sessions identify callers on these routes.',
      str('Provider name.', { pattern: patterns.dnsLabel, maxLength: 63 }),
      { maxItems: 16 },
    ),
    login: obj(
      'Browser login for these routes: an unauthenticated browser is sent to a provider (with login.enabled) instead of getting 401.',
      {
        providers: set(
          'Providers offered; one: a redirect to it; several: a chooser page.',
          str('Provider name.', { pattern: patterns.dnsLabel, maxLength: 63 }),
          { maxItems: 8, minItems: 1 },
        ),
      },
      { required: ['providers'] },
    ),
    apiKeys: obj(
      'API keys kept in Kubernetes Secrets of this namespace, selected by label; each Secret holds one key.',
      {
        selector: mapOf('Labels the Secrets must carry.', str('Value.', { maxLength: 63 }), {
          minProperties: 1,
          maxProperties: 8,
        }),
        header: str('Header carrying the key.', {
          default: 'x-api-key',
          pattern: patterns.headerName,
          maxLength: 64,
        }),
        key: str('Key in the Secret holding the API key.', { default: 'api-key', maxLength: 253 }),
      },
      { required: ['selector'] },
    ),
    serviceAccounts: obj('Kubernetes ServiceAccount tokens (bearer), checked with TokenReview.', {
      audiences: set(
        'Audiences the token must be bound to; empty: the API server’s.',
        str('Audience.', { maxLength: 253 }),
        { maxItems: 8 },
      ),
    }),
    clientCertificates: obj('The client certificate Envoy verified (mTLS) names the caller.', {
      subjectFrom: enumOf(
        'Which name is the subject: the first URI SAN (e.g. a SPIFFE id), the first DNS SAN, or the subject CN.',
        ['URISAN', 'DNSSAN', 'CommonName'],
        {
          default: 'URISAN',
        },
      ),
    }),
    identityHeaders: obj(
      "Headers that tell the upstream who is calling. Nox sets them; a client's copy of any of them, of the identity headers of any other policy on the host, and of any x-nox-* header is removed. A value with a control character, leading or trailing whitespace, or over 8 KiB is not sent.",
      {
        user: str('Provider-qualified subject.', {
          default: 'x-nox-user',
          pattern: patterns.headerName,
          maxLength: 64,
        }),
        provider: str('Provider name.', {
          default: 'x-nox-provider',
          pattern: patterns.headerName,
          maxLength: 64,
        }),
        email: str('Email, sent only when the provider marks it verified.', {
          default: 'x-nox-email',
          pattern: patterns.headerName,
          maxLength: 64,
        }),
        groups: str('Groups, comma-separated; a group name holding a comma is left out.', {
          default: 'x-nox-groups',
          pattern: patterns.headerName,
          maxLength: 64,
        }),
        claims: mapOf(
          'More headers: header name → claim name (nested claims with dots). A list claim is joined with commas as groups are; an object claim is sent as JSON.',
          str('Claim.', { maxLength: 128 }),
          {
            maxProperties: 16,
          },
        ),
      },
      { default: {} },
    ),
    pathCase: enumOf(
      'How the upstream treats letter case in paths. Unknown: a path with capitals is read both as sent and lowercased (as a case-insensitive upstream would route it), and the request is allowed only if both readings are; Sensitive: the upstream tells /Admin from /admin, so only the path as sent counts.',
      ['Unknown', 'Sensitive'],
      { default: 'Unknown' },
    ),
    rules: listMap('Rules, first match wins.', rule, 'name', { maxItems: 64 }),
    defaultAction: enumOf('What happens when no rule matches.', ['Allow', 'Deny'], { default: 'Deny' }),
    priority: int(
      'When several policies match a request, the highest priority is used (ties: the longest path match, then the name).',
      {
        minimum: 0,
        maximum: 1000,
        default: 0,
      },
    ),
  }),
  status: obj('Observed state.', {
    observedGeneration: int('Generation the status describes.', { minimum: 0 }),
    conditions,
  }),
  printerColumns: [
    { name: 'Mode', type: 'string', jsonPath: '.spec.mode' },
    { name: 'Default', type: 'string', jsonPath: '.spec.defaultAction' },
    { name: 'Priority', type: 'integer', jsonPath: '.spec.priority', priority: 1 },
    readyColumn,
    reasonColumn,
    ageColumn,
  ],
};
