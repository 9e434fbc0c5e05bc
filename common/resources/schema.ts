/**
 * A small builder for the structural OpenAPI v3 schemas Kubernetes accepts in a CRD. The
 * kind modules under kinds/ are the single source of truth for each resource: the CRD
 * manifests in crds/, the TypeScript types in types.gen.ts and the validation the
 * sidecar applies to files (validate.ts) are all derived from them.
 */

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
  /** Go-style duration with units ms, s, m, h, plus d and w for long quota windows. */
  duration: '^([0-9]+(ms|s|m|h|d|w))+$',
  quantity: '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$',
  sha256: '^[a-f0-9]{64}$',
  hostname: '^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:[0-9]{1,5})?$',
  httpUrl: '^https?://[^\\s/$.?#][^\\s]*$',
  headerName: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
  cidr: '^([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]{1,2}$|^[0-9a-fA-F:]+/[0-9]{1,3}$',
  clock: '^([01][0-9]|2[0-3]):[0-5][0-9]$',
} as const;

export const duration = (description: string, opts: Opts = {}): Schema =>
  str(description, { pattern: patterns.duration, maxLength: 32, ...opts });

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
      key: str('Key in the Secret.', {
        maxLength: 253,
        minLength: 1,
        ...(defaultKey ? { default: defaultKey } : {}),
      }),
    },
    { required: defaultKey ? ['name'] : ['name', 'key'] },
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
    value: str('Path, starting with "/".', { pattern: '^/[^?#%]*$', maxLength: 1024 }),
  },
  {
    required: ['value'],
    rules: [
      {
        rule: "!self.value.contains('//') && !self.value.contains('/./') && !self.value.contains('/../')",
        message: 'value must be a normalized path (no "//", "/./" or "/../")',
        fieldPath: '.value',
      },
    ],
  },
);

export const routeMatch = obj(
  'Which requests this applies to. Every listed field must match; an empty field matches everything.',
  {
    hosts: set(
      'Hosts (":authority"), exact or with a leading "*." wildcard for one or more labels.',
      str('Host.', { pattern: patterns.hostname }),
      { maxItems: 32 },
    ),
    paths: arr('Paths; a request matches if any of them matches.', pathMatch, { maxItems: 32 }),
    methods: set('HTTP methods.', enumOf('Method.', httpMethods), { maxItems: 9 }),
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

/** A resource quantity, written as a number (cpu: 1) or a string (memory: 256Mi). */
const quantity: Schema = {
  'x-kubernetes-int-or-string': true,
  anyOf: [{ type: 'integer' }, { type: 'string' }],
  pattern: patterns.quantity,
};

export const resources = obj('Compute resources of each pod.', {
  requests: mapOf('Requests, e.g. cpu: 100m, memory: 256Mi.', quantity, { maxProperties: 8 }),
  limits: mapOf('Limits.', quantity, { maxProperties: 8 }),
});

export const storage = obj('Persistent volume of each pod.', {
  size: str('Volume size.', { pattern: patterns.quantity, default: '1Gi', maxLength: 32 }),
  storageClassName: str('StorageClass; empty uses the cluster default.', { maxLength: 253 }),
});
