import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Snapshot } from '../policy/snapshot.js';
import type { Identity } from '../request/identity.js';
import type { CheckInput } from '../request/input.js';
import type { Deny, Outcome } from '../request/outcome.js';
import type { RiskModelRef } from '../risk/models.js';
import type { SubjectFeatures } from '../risk/subjectFeatures.js';

/** Where a cookie of Nox's was set, so that a response can clear exactly that cookie. */
export interface CookieScope {
  readonly name: string;
  readonly domain?: string;
  readonly sameSite: 'Lax' | 'Strict' | 'None';
}

/**
 * The state of one check, shared by its stages: what the checker knows at the start, and
 * one typed field per thing a stage hands on to a later one (never a side table keyed by
 * the check). It carries the compiled snapshot, so it sits above policy/, below every stage.
 */
export interface Ctx {
  readonly decisionId: string;
  readonly snapshot: Snapshot;
  /** Aborted when the check's deadline passes; stages doing I/O must honour it. */
  readonly signal: AbortSignal;
  /** Milliseconds since the epoch when the check started: one clock reading for every stage. */
  readonly now: number;
  /** Set by the route stage: the AccessPolicy that governs this request. */
  accessPolicy?: CompiledAccessPolicy;
  /**
   * Set by the route stage when the path reads more than one way (pathReadings): the path as
   * sent first. Undefined: the path only reads as input.path.
   */
  pathReadings?: readonly string[];
  /** Set by the identify stage; undefined means anonymous. */
  identity?: Identity;
  /** Set by the session method: the request's session cookie names no live session; the response clears it. */
  staleSessionCookie?: CookieScope;
  /** Set by the access stage: the rule of ctx.accessPolicy that decided (or "default"). */
  accessRule?: string;
  /** Set by the quota stage: the tier charged and what is left of its tightest limit. */
  quota?: { readonly tier: string; readonly remaining: number };
  /** Set by the route stage: the RiskModel that scores this request, if any. */
  riskModel?: RiskModelRef;
  /** Set by the quota stage when its store call observed the subject for the risk model. */
  subjectFeatures?: SubjectFeatures;
  /** Set by the risk stage: the score, what it decided, and the features it was computed from. */
  risk?: {
    readonly score: number;
    readonly action: 'allow' | 'challenge' | 'deny' | 'block';
    readonly features: Readonly<Record<string, number>>;
  };
  /** Set by the pipeline: the first deny a DryRun policy would have made (recorded, not enforced). */
  wouldDeny?: Deny;
}

/** One phase of the request path (sidecar/stages/order.ts lists them in order). */
export interface Stage {
  readonly name: string;
  run(input: CheckInput, ctx: Ctx): Outcome | Promise<Outcome>;
  /**
   * The response phase, once the check is decided (every stage continued or skipped, or
   * one denied): called for every stage that has it, in order, with the deny that ends the
   * check (undefined: allowed). A continue adds its headers to an allow, a deny replaces
   * the deny, an error is handled as a stage's; undefined leaves the answer as it is.
   */
  respond?(input: CheckInput, ctx: Ctx, deny: Deny | undefined): Outcome | Promise<Outcome> | undefined;
  /** A new policy snapshot is in force: drop what was derived from the old one. */
  onSnapshot?(snapshot: Snapshot): void;
}
