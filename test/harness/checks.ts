import type { AccessPolicySpec } from '../../common/resources/types.gen.js';
import type { Ctx } from '../../sidecar/pipeline/stage.js';
import { type CompiledAccessPolicy, compileAccessPolicy } from '../../sidecar/policy/accessPolicy.js';
import { compileSnapshot } from '../../sidecar/policy/compile.js';
import type { Snapshot } from '../../sidecar/policy/snapshot.js';
import type { CheckInput } from '../../sidecar/request/input.js';

/**
 * A request as the decode stage would hand it on: GET https://api.test/ from 10.0.0.1, no
 * headers, unless the test says otherwise.
 */
export function checkInput(fields: Partial<CheckInput> = {}): CheckInput {
  return {
    method: 'GET',
    host: 'api.test',
    path: '/',
    query: '',
    scheme: 'https',
    protocol: 'HTTP/1.1',
    headers: {},
    sourceAddress: '10.0.0.1',
    requestId: 'r',
    ...fields,
  };
}

/** A snapshot with no resources in force. */
export const emptySnapshot = (version = 1): Snapshot =>
  compileSnapshot({ resources: [], problems: [] }, undefined, version);

/**
 * The context a check starts with: a fresh deadline signal, the clock read now, and an
 * empty snapshot unless the test gives one.
 */
export function checkContext({ snapshot, ...fields }: Partial<Ctx> = {}): Ctx {
  return {
    decisionId: 'd',
    snapshot: snapshot ?? emptySnapshot(),
    signal: new AbortController().signal,
    now: Date.now(),
    ...fields,
  };
}

/**
 * The AccessPolicy the route stage found for the request, as identity methods get it:
 * Enforce, default Deny, plus what the test sets. Its key's namespace is where the
 * methods look for Secrets.
 */
export function routedPolicy(
  fields: Partial<AccessPolicySpec> = {},
  key = 'AccessPolicy/team-a/p',
): CompiledAccessPolicy {
  return compileAccessPolicy(key, {
    mode: 'Enforce',
    defaultAction: 'Deny',
    priority: 0,
    ...fields,
  } as AccessPolicySpec);
}
