/**
 * A small builder for the structural OpenAPI v3 schemas Kubernetes accepts in a CRD. The
 * kind modules under kinds/ are the single source of truth for each resource: the CRD
 * manifests in crds/, the TypeScript types in types.gen.ts and the validation the
 * sidecar applies to files (validate.ts) are all derived from them.
 */

import { timeZones } from './timeZones.js';

export interface CelRule {
  rule: string;
  message: string;
  /** JSONPath-ish path, relative to the node the rule is on, that the error names. */
  fieldPath?: string;
  reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}

export interface Schema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  additionalProperties?: Schema;
  enum?: readonly (string | number)[];
  default?: unknown;
  pattern?: string;
  format?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
  maxProperties?: number;
  nullable?: boolean;
  anyOf?: Schema[];
  'x-kubernetes-validations'?: CelRule[];
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-map-type'?: 'atomic' | 'granular';
}

type Opts = Omit<Schema, 'type' | 'description' | 'properties' | 'items' | 'additionalProperties'>;

export function str(description: string, opts: Opts = {}): Schema {
  // Every string gets a bound: the API server refuses CEL rules whose cost it cannot bound.
  return { type: 'string', description, maxLength: 253, ...opts };
}

export function int(description: string, opts: Opts = {}): Schema {
  return { type: 'integer', description, ...opts };
}

export function num(description: string, opts: Opts = {}): Schema {
  return { type: 'number', description, ...opts };
}

export function bool(description: string, opts: Opts = {}): Schema {
  return { type: 'boolean', description, ...opts };
}

export function enumOf(description: string, values: readonly string[], opts: Opts = {}): Schema {
  return { type: 'string', description, enum: values, ...opts };
}

export function arr(description: string, items: Schema, opts: Opts = {}): Schema {
  return { type: 'array', description, items, maxItems: 64, ...opts };
}

/** A list whose entries are identified by `key` (server-side apply merges by it; duplicates are rejected). */
export function listMap(description: string, items: Schema, key: string, opts: Opts = {}): Schema {
  return arr(description, items, {
    'x-kubernetes-list-type': 'map',
    'x-kubernetes-list-map-keys': [key],
    ...opts,
  });
}

/** A list of unique scalars. */
export function set(description: string, items: Schema, opts: Opts = {}): Schema {
  return arr(description, items, { 'x-kubernetes-list-type': 'set', ...opts });
}

export function obj(
  description: string,
  properties: Record<string, Schema>,
  opts: Opts & { required?: string[]; rules?: CelRule[] } = {},
): Schema {
  const { rules, required, ...rest } = opts;
  return {
    type: 'object',
    description,
    properties,
    ...(required && required.length > 0 ? { required } : {}),
    ...(rules && rules.length > 0 ? { 'x-kubernetes-validations': rules } : {}),
    ...rest,
  };
}

export function mapOf(description: string, values: Schema, opts: Opts = {}): Schema {
  return { type: 'object', description, additionalProperties: values, maxProperties: 64, ...opts };
}

// Shared field shapes -------------------------------------------------------------------

export const patterns = {
  /** RFC 1123 label, as Kubernetes names are. */
  dnsLabel: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$',
  /** RFC 1123 subdomain (StorageClass names, cookie domains without the leading dot). */
  dnsSubdomain: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$',
  /** Duration with units ms, s, m, h, plus d and w for long windows; whole numbers only. */
  duration: '^([0-9]{1,6}(ms|s|m|h|d|w))+$',
  /**
   * Duration that CEL's duration() can also read (units ms, s, m, h only), for fields whose
   * bounds a CEL rule checks: "1d" would pass a pattern with d and then fail inside the rule.
   */
  celDuration: '^([0-9]{1,6}(ms|s|m|h))+$',
  /**
   * A non-negative resource quantity: a decimal number (at most 15 digits before the point and 9
   * after) and an optional suffix, binary (Ki Mi Gi Ti Pi Ei) or decimal (n u m k M G T P E).
   * No sign and no exponent: a negative request is refused here rather than by the StatefulSet.
   */
  quantity: '^([0-9]{1,15}(\\.[0-9]{1,9})?|\\.[0-9]{1,9})([KMGTPE]i|[numkMGTPE])?$',
  sha256: '^[a-f0-9]{64}$',
  hostname: '^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:[0-9]{1,5})?$',
  httpUrl: '^https?://[^\\s/$.?#][^\\s]*$',
  /**
   * http(s):// to a DNS name (its last label starting with a letter), an IPv4 address or [::1],
   * an optional port up to 65535 and an optional path of printable ASCII without "#": a URL
   * Node's URL parser (which the sidecar uses) reads as written.
   */
  url: '^https?://(([A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?\\.)*[A-Za-z]([-A-Za-z0-9]*[A-Za-z0-9])?|((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])|\\[::1\\])(:([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[\\x21\\x22\\x24-\\x7e]*)?$',
  /** A URL the sidecar may fetch over plain HTTP: https anywhere, http to this host only. */
  secureUrlPrefix: '^(https://|http://(127\\.0\\.0\\.1|localhost|\\[::1\\])([:/]|$))',
  headerName: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
  /** The shape of a CIDR (a CEL isCIDR rule checks the rest); prefix lengths without leading zeros. */
  cidr: '^([0-9]{1,3}\\.){3}[0-9]{1,3}/(0|[1-9][0-9]?)$|^[0-9a-fA-F:]+/(0|[1-9][0-9]{0,2})$',
  clock: '^([01][0-9]|2[0-3]):[0-5][0-9]$',
  /** Printable ASCII without "?", "#", "%" and "\\": what a normalized request path can hold. */
  path: '^/[\\x21\\x22\\x24\\x26-\\x3e\\x40-\\x5b\\x5d-\\x7e]*$',
  /** Label value (and nodeSelector value): at most 63 characters, alphanumeric at both ends. */
  labelValue: '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$',
  /** Label key: an optional DNS subdomain prefix and "/", then a name of at most 63 characters. */
  labelKey:
    '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$',
  /** A key of a Secret or ConfigMap. */
  secretKey: '^[-._a-zA-Z0-9]+$',
} as const;

/** A CEL string literal: 'text', with backslashes and quotes escaped. */
export const celString = (v: string): string => `'${v.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;

/** A CEL list of string literals, e.g. ['a', 'b']. */
export const celList = (values: readonly string[]): string => `[${values.map(celString).join(', ')}]`;

/** An IANA time zone name the sidecar can evaluate (see timeZones.ts). */
export const timeZone = (description: string) =>
  str(
    `${description} An IANA tz database name such as UTC, Europe/Paris or America/New_York (case-sensitive).`,
    {
      default: 'UTC',
      maxLength: 64,
      pattern: '^[A-Za-z0-9_+/-]+$',
      'x-kubernetes-validations': [
        {
          rule: `self in ${celList(timeZones)}`,
          message: 'unknown time zone: must be an IANA time zone name, e.g. UTC or Europe/Paris',
        },
      ],
    },
  );

export const duration = (description: string, opts: Opts = {}): Schema =>
  str(`${description} Whole numbers with units ms, s, m, h, d or w, e.g. 90s, 1h30m, 7d.`, {
    pattern: patterns.duration,
    maxLength: 32,
    ...opts,
  });

/**
 * A duration with bounds checked by CEL's duration() on the field itself, so that an error
 * names the field: units ms, s, m and h only (CEL cannot read d or w).
 */
export const boundedDuration = (
  description: string,
  bounds: { name: string; min?: string; max?: string },
  opts: Opts = {},
): Schema => {
  const checks = [
    ...(bounds.min ? [`duration(self) >= duration('${bounds.min}')`] : []),
    ...(bounds.max ? [`duration(self) <= duration('${bounds.max}')`] : []),
  ];
  const range =
    bounds.min && bounds.max
      ? `from ${bounds.min} to ${bounds.max}`
      : bounds.min
        ? `at least ${bounds.min}`
        : `at most ${bounds.max}`;
  return str(`${description} Whole numbers with units ms, s, m or h (e.g. 30s, 1m30s), ${range}.`, {
    pattern: patterns.celDuration,
    maxLength: 32,
    'x-kubernetes-validations': [
      {
        // The guard keeps a malformed value to the pattern's error instead of an evaluation error.
        rule: `!self.matches(${celString(patterns.celDuration)}) || (${checks.join(' && ')})`,
        message: `${bounds.name} must be ${range}`,
      },
    ],
    ...opts,
  });
};

export const httpMethods = [
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  'OPTIONS',
  'CONNECT',
  'TRACE',
] as const;

export const secretKeyRef = (description: string, defaultKey?: string): Schema =>
  obj(
    description,
    {
      name: str('Name of a Secret in the same namespace.', { pattern: patterns.dnsLabel, maxLength: 253 }),
      key: str('Key in the Secret (letters, digits, "-", "_" and ".").', {
        maxLength: 253,
        minLength: 1,
        pattern: patterns.secretKey,
        ...(defaultKey ? { default: defaultKey } : {}),
      }),
    },
    { required: defaultKey ? ['name'] : ['name', 'key'] },
  );

/**
 * A request path as a policy writes it: normalized the way the sidecar normalizes requests
 * (sidecar/stages/decode.ts), or it could never match one. "/a/..", "/a/." and "//" would be
 * resolved away in every request; ";" starts path parameters, which upstreams such as Tomcat,
 * Jetty and Spring strip before routing, so "/admin;x" cannot be matched safely.
 */
export const normalizedPath = (description: string, maxLength = 1024): Schema =>
  str(
    `${description} Starts with "/"; printable ASCII without "?", "#", "%", "\\" and ";"; normalized: no "//", no "." or ".." segment.`,
    {
      pattern: patterns.path,
      maxLength,
      'x-kubernetes-validations': [
        {
          rule: "!self.contains('//') && !self.contains('/./') && !self.contains('/../') && !self.endsWith('/.') && !self.endsWith('/..')",
          message: 'must be a normalized path (no "//", and no "." or ".." segment, including at the end)',
        },
        {
          rule: "!self.contains(';')",
          message:
            'must not contain ";": path parameters are stripped by many upstreams before routing, so a path with ";" cannot be matched safely',
        },
      ],
    },
  );

export const pathMatch = obj(
  'A path to match. Paths are matched after normalization (dot segments resolved, duplicate slashes merged).',
  {
    type: enumOf(
      'Prefix matches the path and everything below it, on segment boundaries; Exact matches only the path.',
      ['Prefix', 'Exact'],
      {
        default: 'Prefix',
      },
    ),
    value: normalizedPath('Path.'),
  },
  { required: ['value'] },
);

export const routeMatch = obj(
  'Which requests this applies to. Every listed field must match; an absent field matches everything, and an empty list is refused (write nothing instead).',
  {
    hosts: set(
      'Hosts (":authority"), lower-case, exact or with a leading "*." wildcard for one or more labels; at least one when present.',
      str('Host.', { pattern: patterns.hostname }),
      { maxItems: 32, minItems: 1 },
    ),
    paths: arr('Paths; a request matches if any of them matches; at least one when present.', pathMatch, {
      maxItems: 32,
      minItems: 1,
    }),
    methods: set('HTTP methods; at least one when present.', enumOf('Method.', httpMethods), {
      maxItems: 9,
      minItems: 1,
    }),
  },
);

export const enforcementMode = enumOf(
  'Enforce applies decisions; DryRun records what would have been decided (metrics, audit) and never denies.',
  ['Enforce', 'DryRun'],
  { default: 'Enforce' },
);

export const failureMode = (what: string): Schema =>
  enumOf(
    `What happens when ${what} cannot be reached or fails: Closed denies, Open allows (and says so in metrics and audit).`,
    ['Open', 'Closed'],
    {
      default: 'Closed',
    },
  );

export const conditions = listMap(
  'Standard conditions: Accepted (the spec is valid), Ready (in force), and kind-specific ones.',
  obj(
    'A condition.',
    {
      type: str('Condition type.', { maxLength: 316 }),
      status: enumOf('True, False or Unknown.', ['True', 'False', 'Unknown']),
      reason: str('Machine-readable reason, CamelCase.', { maxLength: 1024 }),
      message: str('What a user can do about it.', { maxLength: 32768 }),
      observedGeneration: int('The .metadata.generation this condition was computed from.', { minimum: 0 }),
      lastTransitionTime: str('When status last changed.', { format: 'date-time', maxLength: 64 }),
    },
    { required: ['type', 'status'] },
  ),
  'type',
  { maxItems: 16 },
);

/** Compute resources the operator's pods may ask for; anything else is refused by the Pod API. */
export const resourceNames = ['cpu', 'memory', 'ephemeral-storage'] as const;

/**
 * A resource quantity, written as a whole number (cpu: 1) or a string (memory: 256Mi); never
 * negative (the StatefulSet would be refused when the operator applies it).
 */
const quantity: Schema = {
  'x-kubernetes-int-or-string': true,
  anyOf: [{ type: 'integer' }, { type: 'string' }],
  pattern: patterns.quantity,
  'x-kubernetes-validations': [{ rule: 'type(self) != int || self >= 0', message: 'must not be negative' }],
};

const quantities = (description: string): Schema =>
  mapOf(description, quantity, {
    maxProperties: 3,
    'x-kubernetes-validations': [
      {
        rule: `self.all(k, k in ${celList(resourceNames)})`,
        message: `resource names are ${resourceNames.join(', ')}`,
      },
    ],
  });

export const resources = obj(
  'Compute resources of each pod. Names: cpu, memory, ephemeral-storage; quantities are non-negative decimals with an optional suffix (e.g. 500m, 2, 256Mi, 1.5Gi); a request may not exceed its limit.',
  {
    requests: quantities('Requests, e.g. cpu: 100m, memory: 256Mi.'),
    limits: quantities('Limits.'),
  },
  {
    rules: [
      {
        // isQuantity keeps a malformed value to the pattern's error instead of an evaluation error.
        rule: '!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || !isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k])) || quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)',
        message: 'a request must not be greater than the limit of the same resource',
        fieldPath: '.requests',
      },
    ],
  },
);

export const storage = obj('Persistent volume of each pod.', {
  size: str('Volume size, a quantity greater than zero (e.g. 1Gi, 500Mi).', {
    pattern: patterns.quantity,
    default: '1Gi',
    maxLength: 32,
    'x-kubernetes-validations': [
      {
        rule: `!self.matches(${celString(patterns.quantity)}) || quantity(self).isGreaterThan(quantity('0'))`,
        message: 'must be greater than zero',
      },
    ],
  }),
  storageClassName: str('StorageClass (a DNS subdomain); empty or absent uses the cluster default.', {
    maxLength: 253,
    pattern: `^$|${patterns.dnsSubdomain}`,
  }),
});

/** Label-like maps (nodeSelector, Secret selectors): keys are label keys, values label values. */
export const labelMap = (description: string, opts: Opts = {}): Schema =>
  mapOf(
    `${description} Keys are label keys ([prefix/]name), values label values (at most 63 characters: letters, digits, "-", "_", ".", alphanumeric at both ends).`,
    str('Value.', { maxLength: 63, pattern: patterns.labelValue }),
    {
      maxProperties: 16,
      'x-kubernetes-validations': [
        {
          rule: `self.all(k, size(k) <= 317 && k.matches(${celString(patterns.labelKey)}))`,
          message: 'keys must be label keys: an optional DNS subdomain and "/", then at most 63 characters',
        },
      ],
      ...opts,
    },
  );

/**
 * metadata.name of a RedisCluster or PostgresCluster: it names the cluster's Services (DNS-1035
 * labels: a letter first) and, with "-<hash>", the controller-revision-hash label of its pods
 * (at most 63 characters): so a letter first and at most 52 characters.
 */
export const clusterName: Schema = {
  type: 'string',
  description:
    'Starts with a letter; lower-case letters, digits and "-"; at most 52 characters (it names the cluster\'s Services and pods).',
  maxLength: 52,
  pattern: '^[a-z]([-a-z0-9]*[a-z0-9])?$',
};

/** A container image reference: printable ASCII, no spaces. */
export const image = (description: string, defaultImage: string): Schema =>
  str(`${description} Printable ASCII without spaces.`, {
    default: defaultImage,
    maxLength: 512,
    minLength: 1,
    pattern: '^[\\x21-\\x7e]+$',
  });

/** core/v1 Toleration, with the rules the Pod API applies to it. */
export const tolerations = arr(
  'Tolerations for the pods (core/v1 Toleration).',
  obj(
    'A toleration.',
    {
      key: str('Taint key (a label key); empty with operator Exists tolerates every taint.', {
        maxLength: 317,
        pattern: `^$|${patterns.labelKey}`,
      }),
      operator: enumOf('Exists or Equal.', ['Exists', 'Equal'], { default: 'Equal' }),
      value: str('Taint value (a label value); empty with operator Exists.', {
        maxLength: 63,
        pattern: patterns.labelValue,
      }),
      effect: enumOf('Taint effect; empty matches every effect.', [
        '',
        'NoSchedule',
        'PreferNoSchedule',
        'NoExecute',
      ]),
      tolerationSeconds: int('How long a NoExecute taint is tolerated.', {
        minimum: -9007199254740991,
        maximum: 9007199254740991,
      }),
    },
    {
      rules: [
        {
          rule: "self.operator != 'Exists' || !has(self.value) || self.value == ''",
          message: 'value must be empty when operator is Exists',
          fieldPath: '.value',
        },
        {
          rule: "self.operator == 'Exists' || (has(self.key) && self.key != '')",
          message: 'operator must be Exists when key is empty',
          fieldPath: '.operator',
        },
        {
          rule: "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
          message: 'tolerationSeconds needs effect NoExecute',
          fieldPath: '.tolerationSeconds',
        },
      ],
    },
  ),
  { maxItems: 16 },
);

/** A map of configuration settings: names by pattern, values on one line, reserved names refused. */
export const settingsMap = (
  description: string,
  opts: {
    field: string;
    namePattern: string;
    nameHint: string;
    reserved: readonly string[];
    maxProperties: number;
  },
): Schema =>
  mapOf(
    `${description} Names: ${opts.nameHint}. Values: one line (no CR, LF or NUL). Names the operator manages are refused in any letter case: ${opts.reserved.join(', ')}.`,
    str('Value.', {
      maxLength: 1024,
      'x-kubernetes-validations': [
        {
          rule: "!self.contains('\\n') && !self.contains('\\r') && !self.contains('\\u0000')",
          message: 'must be one line: no CR, LF or NUL',
        },
      ],
    }),
    {
      maxProperties: opts.maxProperties,
      'x-kubernetes-validations': [
        {
          rule: `self.all(k, size(k) <= 128 && k.matches(${celString(opts.namePattern)}))`,
          message: `${opts.field} names must be ${opts.nameHint}`,
        },
        {
          rule: `self.all(k, !(k.lowerAscii() in ${celList(opts.reserved)}))`,
          message: `${opts.field} must not set settings the operator manages (in any letter case): ${opts.reserved.join(', ')}`,
          reason: 'FieldValueForbidden',
        },
      ],
    },
  );
