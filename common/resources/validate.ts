import { isIPv4, isIPv6 } from 'node:net';
import {
  type CelInput,
  type CelResult,
  CelScalar,
  celEnv,
  celFunc,
  celMethod,
  parse,
  plan,
} from '@bufbuild/cel';
import { strings } from '@bufbuild/cel/ext';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { apiVersion, type KindDefinition } from './kind.js';
import { kindByName } from './kinds/index.js';
import { type CelRule, patterns, type Schema } from './schema.js';

/**
 * What the API server does to a nox.dev object on create, done in-process for resources
 * read from files (standalone mode): defaults, the OpenAPI schema, unknown fields refused
 * (as `kubectl apply --validate=strict` does), and the CEL rules of the CRD, evaluated
 * from the same kind definitions. A file is thus held to the same rules as the cluster.
 */

export interface FieldError {
  /** e.g. spec.tiers[0].limits[0].requests */
  readonly field: string;
  readonly message: string;
}

export type Validated<T = unknown> =
  | { readonly ok: true; readonly object: T }
  | { readonly ok: false; readonly errors: readonly FieldError[] };

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, coerceTypes: false });
const compiled = new Map<string, ValidateFunction>();

/** A copy of the schema in which objects with declared properties refuse unknown ones. */
function strictCopy(s: Schema): Schema {
  const copy: Schema = { ...s };
  if (s.properties) {
    copy.properties = Object.fromEntries(Object.entries(s.properties).map(([k, v]) => [k, strictCopy(v)]));
    if (!s['x-kubernetes-preserve-unknown-fields'])
      (copy as Record<string, unknown>).additionalProperties = false;
  }
  if (s.items) copy.items = strictCopy(s.items);
  if (s.additionalProperties) copy.additionalProperties = strictCopy(s.additionalProperties);
  return copy;
}

function validatorFor(def: KindDefinition): ValidateFunction {
  let v = compiled.get(def.kind);
  if (!v) {
    v = ajv.compile(strictCopy(def.spec));
    compiled.set(def.kind, v);
  }
  return v;
}

const dns1123Subdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function validateResource(input: unknown): Validated {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    return fail('', 'must be an object');
  }
  const obj = structuredClone(input) as Record<string, unknown>;
  if (obj.apiVersion !== apiVersion)
    return fail('apiVersion', `must be ${apiVersion}, got ${JSON.stringify(obj.apiVersion)}`);
  const def = typeof obj.kind === 'string' ? kindByName(obj.kind) : undefined;
  if (!def) return fail('kind', `unknown kind ${JSON.stringify(obj.kind)}`);
  const meta = obj.metadata as Record<string, unknown> | undefined;
  const name = meta?.name;
  if (typeof name !== 'string' || name.length > 253 || !dns1123Subdomain.test(name)) {
    return fail('metadata.name', 'must be a lowercase RFC 1123 subdomain of at most 253 characters');
  }
  if (def.name?.maxLength !== undefined && name.length > def.name.maxLength)
    return fail('metadata.name', `Too long: may not be more than ${def.name.maxLength} bytes`);
  if (def.name?.pattern !== undefined && !new RegExp(def.name.pattern).test(name))
    return fail(
      'metadata.name',
      `Invalid value: ${JSON.stringify(name)}: should match '${def.name.pattern}'`,
    );
  if (obj.spec === undefined || obj.spec === null) return fail('spec', 'Required value');
  const validate = validatorFor(def);
  if (!validate(obj.spec)) return { ok: false, errors: (validate.errors ?? []).map(fromAjv) };
  const celErrors: FieldError[] = [];
  evaluateRules(def.spec, obj.spec, 'spec', celErrors);
  evaluateRootRules(def, obj, celErrors);
  if (celErrors.length > 0) return { ok: false, errors: celErrors };
  return { ok: true, object: obj };
}

function fail(field: string, message: string): Validated {
  return { ok: false, errors: [{ field, message }] };
}

/** ajv's errors, worded as the API server words the same violations. */
function fromAjv(e: ErrorObject): FieldError {
  const path = `spec${e.instancePath.replace(/\/(\d+)/g, '[$1]').replaceAll('/', '.')}`;
  const value = JSON.stringify(e.data);
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties':
      return { field: `${path}.${String(p.additionalProperty)}`, message: 'field not declared in schema' };
    case 'required':
      return { field: `${path}.${String(p.missingProperty)}`, message: 'Required value' };
    case 'enum':
      return {
        field: path,
        message: `Unsupported value: ${value}: supported values: ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`,
      };
    case 'pattern':
      return { field: path, message: `Invalid value: ${value}: should match '${String(p.pattern)}'` };
    case 'minimum':
      return {
        field: path,
        message: `Invalid value: ${value}: should be greater than or equal to ${String(p.limit)}`,
      };
    case 'maximum':
      return {
        field: path,
        message: `Invalid value: ${value}: should be less than or equal to ${String(p.limit)}`,
      };
    case 'minItems':
      return { field: path, message: `Invalid value: should have at least ${String(p.limit)} items` };
    case 'maxItems':
      return { field: path, message: `Too many: must have at most ${String(p.limit)} items` };
    case 'maxLength':
      return { field: path, message: `Too long: may not be longer than ${String(p.limit)}` };
    case 'type':
      return { field: path, message: `Invalid value: ${value}: must be of type ${String(p.type)}` };
    default:
      return { field: path, message: `Invalid value: ${e.message ?? e.keyword}` };
  }
}

// --- The API server's CEL libraries, as far as the kind definitions use them ---------------
// Kubernetes' CIDR and quantity types are opaque objects; here a CIDR or quantity stays the
// string it was made from and the methods the rules call are defined on strings. Only what the
// rules use is provided: a rule using anything else fails to evaluate, and a test says so.

/** k8s.io/apiserver/pkg/cel/library/cidr.go isCIDR: netip.ParsePrefix, no zone, no IPv4-mapped IPv6. */
export function isCidr(s: string): boolean {
  const slash = s.lastIndexOf('/');
  if (slash === -1) return false;
  const addr = s.slice(0, slash);
  const bits = s.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(bits)) return false;
  if (isIPv4(addr)) return Number(bits) <= 32;
  if (!isIPv6(addr) || addr.includes('%')) return false;
  // IPv4-mapped (::ffff:a.b.c.d in any spelling) is refused; the URL parser gives the canonical form.
  if (/^\[::ffff:[0-9a-f]{1,4}:[0-9a-f]{1,4}\]$/.test(new URL(`http://[${addr}]`).hostname)) return false;
  return Number(bits) <= 128;
}

const quantityRe = new RegExp(patterns.quantity);
const decimalSuffix: Record<string, number> = {
  n: -9,
  u: -6,
  m: -3,
  '': 0,
  k: 3,
  M: 6,
  G: 9,
  T: 12,
  P: 15,
  E: 18,
};
const binarySuffix: Record<string, bigint> = { Ki: 1n, Mi: 2n, Gi: 3n, Ti: 4n, Pi: 5n, Ei: 6n };

/** A quantity of the schema's pattern, exactly, in units of 10^-18 (enough for "1n" with 9 decimals). */
function quantityValue(s: string): bigint {
  const m = quantityRe.exec(s);
  if (!m) throw new Error(`quantities must match the regular expression '${patterns.quantity}'`);
  const number = m[1]!;
  const suffix = m[3] ?? '';
  const [whole = '', frac = ''] = number.split('.');
  const digits = BigInt(`${whole || '0'}${frac.padEnd(18, '0')}`); // × 10^18
  const binary = binarySuffix[suffix];
  if (binary !== undefined) return digits * 1024n ** binary;
  const exp = decimalSuffix[suffix]!;
  return exp >= 0 ? digits * 10n ** BigInt(exp) : digits / 10n ** BigInt(-exp);
}

const k8sFuncs = [
  ...strings,
  celFunc('isCIDR', [CelScalar.STRING], CelScalar.BOOL, (s) => isCidr(s)),
  celFunc('isQuantity', [CelScalar.STRING], CelScalar.BOOL, (s) => quantityRe.test(s)),
  celFunc('quantity', [CelScalar.STRING], CelScalar.STRING, (s) => {
    quantityValue(s);
    return s;
  }),
  celMethod('isGreaterThan', CelScalar.STRING, [CelScalar.STRING], CelScalar.BOOL, function (other) {
    return quantityValue(this) > quantityValue(other);
  }),
  celMethod('isLessThan', CelScalar.STRING, [CelScalar.STRING], CelScalar.BOOL, function (other) {
    return quantityValue(this) < quantityValue(other);
  }),
  celMethod('compareTo', CelScalar.STRING, [CelScalar.STRING], CelScalar.INT, function (other) {
    const a = quantityValue(this);
    const b = quantityValue(other);
    return a > b ? 1n : a < b ? -1n : 0n;
  }),
];
const env = celEnv({ funcs: k8sFuncs });
const programs = new Map<string, (ctx: { self: CelInput }) => CelResult>();

/** Evaluates a rule with self bound; a rule that cannot be parsed or evaluated gives its CelError. */
export function evaluateRule(rule: string, self: CelInput): CelResult {
  let program = programs.get(rule);
  if (!program) {
    try {
      program = plan(env, parse(rule)) as (ctx: { self: CelInput }) => CelResult;
    } catch (e) {
      return { message: String(e) } as CelResult;
    }
    programs.set(rule, program);
  }
  try {
    return program({ self });
  } catch (e) {
    return { message: String(e) } as CelResult;
  }
}

function checkRule(r: CelRule, self: CelInput, path: string, errors: FieldError[]): void {
  const result = evaluateRule(r.rule, self);
  if (result === true) return;
  const why =
    result !== false ? ` (rule could not be evaluated: ${(result as { message?: string }).message})` : '';
  // A map key in fieldPath (.parameters['x']) is named as the API server names it: parameters[x].
  const field = `${path}${r.fieldPath ?? ''}`.replace(/^\./, '').replace(/\['([^']*)'\]/g, '[$1]');
  errors.push({ field, message: `${r.message}${why}` });
}

/** The root rules of a kind: self is the object with its metadata.name and spec. */
function evaluateRootRules(def: KindDefinition, obj: Record<string, unknown>, errors: FieldError[]): void {
  if (!def.rules?.length) return;
  const meta = obj.metadata as Record<string, unknown>;
  const self = new Map<string, unknown>([
    ['metadata', new Map([['name', meta.name]])],
    ['spec', toCel(def.spec, obj.spec)],
  ]);
  for (const r of def.rules) checkRule(r, self as CelInput, '', errors);
}

/** Walks schema and value together, evaluating every x-kubernetes-validations rule. */
function evaluateRules(s: Schema, value: unknown, path: string, errors: FieldError[]): void {
  if (value === undefined || value === null) return;
  for (const r of s['x-kubernetes-validations'] ?? [])
    checkRule(r, toCel(s, value) as CelInput, path, errors);
  if (s.properties && typeof value === 'object') {
    for (const [k, sub] of Object.entries(s.properties)) {
      evaluateRules(sub, (value as Record<string, unknown>)[k], `${path}.${k}`, errors);
    }
  }
  if (s.items && Array.isArray(value)) {
    checkListUniqueness(s, value, path, errors);
    for (const [i, v] of value.entries()) evaluateRules(s.items, v, `${path}[${i}]`, errors);
  }
  if (s.additionalProperties && typeof value === 'object') {
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      evaluateRules(s.additionalProperties, v, `${path}[${k}]`, errors);
    }
  }
}

/** JSON value → CEL value with the types the API server uses: integer fields are CEL ints, objects are maps. */
function toCel(s: Schema | undefined, value: unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => toCel(s?.items, v));
  if (value !== null && typeof value === 'object') {
    return new Map(
      Object.entries(value).map(([k, v]) => [k, toCel(s?.properties?.[k] ?? s?.additionalProperties, v)]),
    );
  }
  if (
    typeof value === 'number' &&
    (s?.type === 'integer' || (s?.['x-kubernetes-int-or-string'] && Number.isInteger(value)))
  )
    return BigInt(value);
  return value;
}

/** x-kubernetes-list-type map and set: entries are unique by key (map) or by value (set). */
function checkListUniqueness(s: Schema, list: unknown[], path: string, errors: FieldError[]): void {
  const type = s['x-kubernetes-list-type'];
  if (type !== 'map' && type !== 'set') return;
  const keys = s['x-kubernetes-list-map-keys'] ?? [];
  const seen = new Set<string>();
  for (const item of list) {
    if (type === 'set') {
      const id = JSON.stringify(item);
      if (seen.has(id)) errors.push({ field: path, message: `duplicate entries for value ${id}` });
      seen.add(id);
      continue;
    }
    const id = keys.map((k) => `${k}=${JSON.stringify((item as Record<string, unknown>)?.[k])}`).join(',');
    if (seen.has(id)) errors.push({ field: path, message: `duplicate entries for key [${id}]` });
    seen.add(id);
  }
}
