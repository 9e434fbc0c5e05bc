import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';

/**
 * The two ways the sidecar reads its resources (docs/architecture.md, "Configuration"): the
 * Kubernetes API and YAML/JSON files. A source only reads: it hands the complete current set
 * of matching objects to a callback, and the compiler decides what is valid.
 */

export interface ResourceKind {
  group: string;
  version: string;
  kind: string;
  plural: string;
  /** Defaults to true; a cluster-scoped kind ignores the namespaces a source serves. */
  namespaced?: boolean;
}

export interface RawResource {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    generation?: number;
    resourceVersion?: string;
    uid?: string;
    labels?: Record<string, string>;
    /** Kubernetes only: which policy claimed a host first (common/resources/hostOwnership.ts). */
    creationTimestamp?: string;
  };
  spec?: unknown;
  /** where it came from: "k8s" or the file path (and document index) */
  origin: string;
}

/** A document that could not even be read as a resource (YAML syntax error, no kind/name...). */
export interface SourceProblem {
  origin: string;
  reason: string;
  /** 1-based line in the file, when known. */
  line?: number;
}

export interface SourceState {
  resources: readonly RawResource[];
  problems: readonly SourceProblem[];
}

export interface ConfigSource {
  /** Resolves after the first complete state has been delivered (or rejects if it cannot start at all). */
  start(onState: (state: SourceState) => void): Promise<void>;
  stop(): Promise<void>;
  /** false while a watch is broken and being re-established */
  healthy(): boolean;
}

export const DEFAULT_DEBOUNCE_MS = 75;

/** `Kind namespace/name`, or `Kind name` for a cluster-scoped object. */
export function describeResource(r: Pick<RawResource, 'kind' | 'metadata'>): string {
  const ns = r.metadata.namespace;
  return `${r.kind} ${ns ? `${ns}/` : ''}${r.metadata.name}`;
}

/** A gauge on `registry`, made on first use: several sources may share one registry. */
export function gaugeOn<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: L[],
): Gauge<L> {
  const existing = registry.getSingleMetric(name) as Gauge<L> | undefined;
  return existing ?? new Gauge({ name, help, labelNames, registers: [registry] });
}

export function counterOn<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: L[],
): Counter<L> {
  const existing = registry.getSingleMetric(name) as Counter<L> | undefined;
  return existing ?? new Counter({ name, help, labelNames, registers: [registry] });
}

export function objectsGauge(registry: Registry): Gauge<'kind'> {
  return gaugeOn(registry, 'nox_config_objects', 'Objects of each kind in the configuration source.', [
    'kind',
  ]);
}

/** Delivered objects are shared between states and with the compiler, so nobody may mutate them. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * What makes two states different for the compiler. resourceVersion is left out on purpose:
 * every status write by the operator bumps it, and recompiling for that would be waste.
 */
function fingerprint(state: SourceState): string {
  return JSON.stringify([
    state.resources.map((r) => [
      r.origin,
      r.apiVersion,
      r.kind,
      r.metadata.namespace,
      r.metadata.name,
      r.metadata.uid,
      r.metadata.generation,
      r.metadata.labels,
      r.metadata.creationTimestamp,
      r.spec,
    ]),
    state.problems,
  ]);
}

/**
 * Hands states to the consumer: the first one always, later ones only when they differ.
 * A throwing consumer is logged; it must not break the source that calls it.
 */
export class StatePublisher {
  #last: string | undefined;

  constructor(
    private readonly deliver: (state: SourceState) => void,
    private readonly log: Logger,
  ) {}

  get delivered(): boolean {
    return this.#last !== undefined;
  }

  publish(state: SourceState): boolean {
    const print = fingerprint(state);
    if (print === this.#last) return false;
    this.#last = print;
    const frozen: SourceState = Object.freeze({
      resources: Object.freeze([...state.resources]),
      problems: Object.freeze(state.problems.map((p) => Object.freeze({ ...p }))),
    });
    try {
      this.deliver(frozen);
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'configuration state consumer threw');
    }
    return true;
  }
}

/** Runs `fn` once, `ms` after the last of a burst of calls. */
export class Debouncer {
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ms: number,
    private readonly fn: () => void,
  ) {}

  trigger(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.fn();
    }, this.ms);
  }

  cancel(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
