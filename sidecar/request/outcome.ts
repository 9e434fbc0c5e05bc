import type { ErrorCode } from '../errors.js';
import type { Identity } from './identity.js';

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

/** What one stage says about a request. */
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

/** What the whole request path decided. */
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
