import type { OAuth2ProviderSpec, RiskModelSpec } from '../../common/resources/types.gen.js';
import type { CompiledAccessPolicy } from './accessPolicy.js';
import type { HostHeaderNames } from './hostHeaders.js';
import type { CompiledQuotaPolicy } from './quotaPolicy.js';
import type { RouteIndex } from './router.js';

/** A resource that is in force, as validated (defaults filled in). */
export interface AcceptedResource {
  readonly key: string;
  readonly kind: string;
  readonly origin: string;
  readonly generation?: number;
  readonly object: Readonly<Record<string, unknown>>;
}

export interface Rejection {
  readonly key: string;
  readonly origin: string;
  readonly errors: readonly string[];
  /** A previous version of the same resource stays in force. */
  readonly keptPrevious: boolean;
}

export interface Warning {
  readonly key: string;
  readonly message: string;
}

/**
 * The compiled, immutable form of the policy the request path reads. A snapshot is built
 * once per configuration change and never mutated; the store swaps the reference, so a
 * check sees one whole snapshot from start to end.
 */
export interface Snapshot {
  /** Monotonic per process; recorded in every decision. */
  readonly version: number;
  /** sha256 over the resources in force, so two sidecars can tell they run the same policy. */
  readonly digest: string;
  readonly loadedAt: string;
  readonly access: RouteIndex<CompiledAccessPolicy>;
  readonly quota: RouteIndex<CompiledQuotaPolicy>;
  readonly risk: RouteIndex<{ key: string; spec: RiskModelSpec }>;
  /** Every RiskModel in force, by key order: the models the sidecar keeps loaded. */
  readonly riskModels: readonly { readonly key: string; readonly spec: RiskModelSpec }[];
  /** OAuth2Providers by "namespace/name". */
  readonly providers: ReadonlyMap<string, OAuth2ProviderSpec>;
  /**
   * Per host, the identity header names of every AccessPolicy whose hosts cover it: a client's
   * copy of any of them is removed from every allowed request, whichever policy routed it.
   */
  readonly identityHeaderNames: HostHeaderNames;
  readonly accepted: ReadonlyMap<string, AcceptedResource>;
  readonly rejected: readonly Rejection[];
  /** Accepted but unusable as written (e.g. a reference to something that does not exist). */
  readonly warnings: readonly Warning[];
}
