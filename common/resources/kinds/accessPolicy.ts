import { ageColumn, type KindDefinition, readyColumn, reasonColumn } from '../kind.js';
import {
  arr,
  celString,
  conditions,
  duration,
  enforcementMode,
  enumOf,
  httpMethods,
  int,
  labelMap,
  listMap,
  mapOf,
  num,
  obj,
  pathMatch,
  patterns,
  routeMatch,
  set,
  str,
  timeZone,
} from '../schema.js';

/** A list of strings; when present it has at least one entry ([] would read as "no condition"). */
/**
 * Header names an identity header may not take: Nox would overwrite or remove what HTTP,
 * Envoy or the upstream rely on (the caller's credentials and cookies, framing, hop-by-hop
 * headers, forwarding and tracing headers).
 */
const reservedHeaderNames = `['host', 'authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-connection', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-request-id', 'forwarded', 'via']`;
const notReserved = (what: string) => ({
  rule: `!(self.lowerAscii() in ${reservedHeaderNames})`,
  message: `${what} may not be a header HTTP, Envoy or the upstream relies on (host, authorization, cookie, content-length, hop-by-hop and forwarding headers)`,
});

const strings = (description: string, maxLength = 253) =>
  set(`${description} At least one when present.`, str('Value.', { maxLength, minLength: 1 }), {
    maxItems: 32,
    minItems: 1,
  });

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
    timeZone: timeZone('Time zone of start and end.'),
    days: set(
      'Days of the week; absent means every day (an empty list is refused).',
      enumOf('Day.', ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun']),
      { maxItems: 7, minItems: 1 },
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
  'Conditions, all of which must hold. An absent field always holds; an empty list is refused (it would otherwise read as "anyone"). Identity fields never hold for anonymous requests.',
  {
    subjects: strings('Provider-qualified subjects ("<provider>:<sub>") or verified emails.'),
    providers: strings('OAuth2Provider names.', 63),
    groups: strings('Any of these groups.'),
    roles: strings('Any of these roles.'),
    scopes: strings('All of these scopes.'),
    authMethods: strings(
      'All of these authentication methods (RFC 8176 amr values, e.g. mfa, otp, hwk, face, fpt, vbm): the token’s amr claim lists each. How a biometric or second factor done at the provider is required.',
      64,
    ),
    claims: arr('Claim conditions; at least one when present.', claimCondition, {
      maxItems: 16,
      minItems: 1,
    }),
    authenticated: enumOf('Authenticated: a caller was identified; Anonymous: none was.', [
      'Authenticated',
      'Anonymous',
    ]),
    methods: set('HTTP methods; at least one when present.', enumOf('Method.', httpMethods), {
      maxItems: 9,
      minItems: 1,
    }),
    paths: arr('Paths; at least one when present.', pathMatch, { maxItems: 32, minItems: 1 }),
    hosts: set('Hosts; at least one when present.', str('Host.', { pattern: patterns.hostname }), {
      maxItems: 32,
      minItems: 1,
    }),
    sourceCIDRs: set(
      'Client address ranges; at least one when present.',
      str('An IPv4 or IPv6 CIDR, e.g. 10.0.0.0/8 or 2001:db8::/32 (no zone, no IPv4-mapped IPv6).', {
        pattern: patterns.cidr,
        maxLength: 64,
        'x-kubernetes-validations': [
          {
            rule: 'isCIDR(self)',
            message: 'must be an IPv4 or IPv6 CIDR such as 10.0.0.0/8 or 2001:db8::/32',
          },
        ],
      }),
      { maxItems: 32, minItems: 1 },
    ),
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
        selector: labelMap('Labels the Secrets must carry; at least one.', {
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
          'x-kubernetes-validations': [notReserved('an identity header')],
        }),
        provider: str('Provider name.', {
          default: 'x-nox-provider',
          pattern: patterns.headerName,
          maxLength: 64,
          'x-kubernetes-validations': [notReserved('an identity header')],
        }),
        email: str('Email, sent only when the provider marks it verified.', {
          default: 'x-nox-email',
          pattern: patterns.headerName,
          maxLength: 64,
          'x-kubernetes-validations': [notReserved('an identity header')],
        }),
        groups: str('Groups, comma-separated; a group name holding a comma is left out.', {
          default: 'x-nox-groups',
          pattern: patterns.headerName,
          maxLength: 64,
          'x-kubernetes-validations': [notReserved('an identity header')],
        }),
        claims: mapOf(
          'More headers: header name (an HTTP token) → claim name (nested claims with dots). A list claim is joined with commas as groups are; an object claim is sent as JSON.',
          str('Claim.', { maxLength: 128, minLength: 1 }),
          {
            maxProperties: 16,
            'x-kubernetes-validations': [
              {
                rule: `self.all(k, size(k) <= 64 && k.matches(${celString(patterns.headerName)}))`,
                message: 'keys must be HTTP header names of at most 64 characters',
              },
              {
                rule: `self.all(k, !(k.lowerAscii() in ${reservedHeaderNames}))`,
                message:
                  'keys may not be headers HTTP, Envoy or the upstream relies on (host, authorization, cookie, content-length, hop-by-hop and forwarding headers)',
              },
            ],
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
    audit: obj(
      'Which decisions on these routes become audit events (the sidecar writes them to the PostgresCluster). A DryRun policy’s would-be denies are recorded with the allow they did not prevent.',
      {
        record: enumOf(
          'All: every decision; Denies: denies only (and would-be denies); Sample: every deny and a share of the allows.',
          ['All', 'Denies', 'Sample'],
          { default: 'All' },
        ),
        allowSampleRate: num('With record: Sample, the share of allows recorded, 0 to 1.', {
          minimum: 0,
          maximum: 1,
          default: 0.01,
        }),
      },
      { default: {} },
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
