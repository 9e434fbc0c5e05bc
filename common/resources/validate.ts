import { type CelInput, isCelError, run } from '@bufbuild/cel';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { apiVersion, type KindDefinition } from './kind.js';
import { kindByName } from './kinds/index.js';
import type { Schema } from './schema.js';

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
  if (obj.spec === undefined || obj.spec === null) return fail('spec', 'Required value');
  const validate = validatorFor(def);
  if (!validate(obj.spec)) return { ok: false, errors: (validate.errors ?? []).map(fromAjv) };
  const celErrors: FieldError[] = [];
  evaluateRules(def.spec, obj.spec, 'spec', celErrors);
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

/** Walks schema and value together, evaluating every x-kubernetes-validations rule. */
function evaluateRules(s: Schema, value: unknown, path: string, errors: FieldError[]): void {
  if (value === undefined || value === null) return;
  for (const r of s['x-kubernetes-validations'] ?? []) {
    const result = run(r.rule, { self: toCel(s, value) as CelInput });
    if (result !== true) {
      const why = isCelError(result) ? ` (rule could not be evaluated: ${result.message})` : '';
      errors.push({ field: `${path}${r.fieldPath ?? ''}`, message: `${r.message}${why}` });
    }
  }
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
  if (typeof value === 'number' && s?.type === 'integer') return BigInt(value);
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
