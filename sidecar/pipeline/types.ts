import type { ErrorCode } from '../errors.js';
import type { Identity } from '../identity/identity.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Snapshot } from '../policy/snapshot.js';

/** What the decision is computed from: the parts of Envoy's CheckRequest Nox reads, normalized. */
export interface CheckInput {
  readonly method: string;
  readonly host: string;
  /** Normalized path (dot segments resolved, duplicate slashes merged), no query. */
  readonly path: string;
  readonly query: string;
  readonly scheme: string;
  readonly protocol: string;
  /** Lower-case header names, as Envoy sends them. */
  readonly headers: Readonly<Record<string, string>>;
  readonly sourceAddress: string;
  readonly requestId: string;
  /** URL-encoded PEM of the downstream client certificate (Envoy's include_peer_certificate), if any. */
  readonly peerCertificate?: string;
}

export interface Ctx {
  readonly decisionId: string;
  readonly snapshot: Snapshot;
  /** Aborted when the check's deadline passes; stages doing I/O must honour it. */
  readonly signal: AbortSignal;
  /** Milliseconds since the epoch when the check started: one clock reading for every stage. */
  readonly now: number;
  /** Set by the route stage: the AccessPolicy that governs this request. */
  accessPolicy?: CompiledAccessPolicy;
  /** Set by the identify stage; undefined means anonymous. */
  identity?: Identity;
}

/** Headers the upstream receives on allow, and headers the client receives. */
export interface Allow {
  readonly upstreamHeaders: Record<string, string>;
  /** Removed from the request unless set in upstreamHeaders. */
  readonly removeHeaders?: readonly string[];
  readonly responseHeaders: Record<string, string>;
}

export interface Deny {
  readonly code: ErrorCode;
  readonly reason: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** A body of Nox's own (e.g. the login chooser page, with its content-type in headers); default: the JSON error. */
  readonly body?: string;
}

export type Outcome =
  | {
      readonly kind: 'continue';
      readonly upstreamHeaders?: Readonly<Record<string, string>>;
      readonly responseHeaders?: Readonly<Record<string, string>>;
      readonly identity?: Identity;
      /** Headers to take out of the request if no stage sets them (e.g. a client's forged identity header). */
      readonly removeUpstreamHeaders?: readonly string[];
      /** The stage would have denied, but its policy is in DryRun: recorded, not enforced. */
      readonly dryRunDeny?: Deny;
    }
  | { readonly kind: 'deny'; readonly deny: Deny }
  /** The stage did not apply to this request. Not the same as succeeding. */
  | { readonly kind: 'skip' }
  /** The stage could not decide: a deny, unless the policy declares fail-open for it. */
  | {
      readonly kind: 'error';
      readonly code: ErrorCode;
      readonly cause: unknown;
      readonly failOpen?: boolean;
    };

export interface Stage {
  readonly name: string;
  run(input: CheckInput, ctx: Ctx): Outcome | Promise<Outcome>;
}

export type Decision =
  | {
      readonly allowed: true;
      readonly allow: Allow;
      readonly decisionId: string;
      readonly snapshotVersion: number;
    }
  | {
      readonly allowed: false;
      readonly deny: Deny;
      readonly decisionId: string;
      readonly snapshotVersion: number;
    };
