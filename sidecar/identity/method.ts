import type { Ctx } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Snapshot } from '../policy/snapshot.js';
import type { Identity } from '../request/identity.js';
import type { CheckInput } from '../request/input.js';
import type { MethodEnv } from './fanout.js';

/** What one identity method made of a request. */
export type MethodResult =
  /** This method's credential is not in the request (e.g. no cookie): try the next. */
  | { readonly kind: 'absent' }
  | { readonly kind: 'identified'; readonly identity: Identity }
  /** A credential was presented and does not hold up: 401 unless another method identifies the caller. */
  | { readonly kind: 'invalid'; readonly reason: string }
  /** The credential could not be checked (provider, JWKS, API server unreachable): fail closed. */
  | { readonly kind: 'unavailable'; readonly cause: unknown };

/**
 * One way of identifying a caller (bearer JWT, opaque token, session cookie, API key,
 * ServiceAccount token, client certificate). The identify stage runs the methods a
 * route accepts in order; the first that identifies the caller names it.
 */
export interface IdentityMethod {
  readonly name: string;
  /** Called once by the identify stage: the dependency guards (caps, metrics) and revocation list all methods share. */
  attach?(env: MethodEnv): void;
  /** Called on every snapshot swap: rebuild per-provider state, keep what did not change. */
  onSnapshot?(snapshot: Snapshot): void;
  identify(input: CheckInput, ctx: Ctx, policy: CompiledAccessPolicy): MethodResult | Promise<MethodResult>;
}

/** The namespace of the policy, where its providers, Secrets and keys live. */
export function policyNamespace(policy: CompiledAccessPolicy): string {
  return policy.key.split('/')[1] ?? 'default';
}
