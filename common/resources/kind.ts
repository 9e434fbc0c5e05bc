import type { CelRule, Schema } from './schema.js';

export const group = 'nox.dev';
export const version = 'v1alpha1';
export const apiVersion = `${group}/${version}`;
export const category = 'nox';

export interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description?: string;
  priority?: number;
}

/** Everything about one resource kind; crd.ts and the type generator read only this. */
export interface KindDefinition {
  readonly kind: string;
  readonly plural: string;
  readonly singular: string;
  readonly shortNames: readonly string[];
  /** policy kinds are read by the sidecar; cluster kinds are run by the operator. */
  readonly role: 'policy' | 'cluster';
  readonly description: string;
  readonly spec: Schema;
  readonly status: Schema;
  /**
   * CEL rules on the whole object (self.metadata.name and self.spec), for what depends on the
   * name; fieldPath is relative to the object, e.g. ".spec.switchoverTo".
   */
  readonly rules?: readonly CelRule[];
  /** Restrictions on metadata.name beyond a DNS subdomain (pattern, maxLength). */
  readonly name?: Schema;
  readonly printerColumns: readonly PrinterColumn[];
}

export const readyColumn: PrinterColumn = {
  name: 'Ready',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].status',
  description: 'Whether the resource is in force.',
};
export const reasonColumn: PrinterColumn = {
  name: 'Reason',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
  priority: 1,
};
export const ageColumn: PrinterColumn = {
  name: 'Age',
  type: 'date',
  jsonPath: '.metadata.creationTimestamp',
};
