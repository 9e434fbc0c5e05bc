import type { Ctx } from '../../sidecar/pipeline/stage.js';
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
