/**
 * The closed list of reasons the sidecar can deny a request. Every deny carries exactly
 * one of these codes; each maps to the HTTP status the client sees, the google.rpc code
 * Envoy sees in CheckResponse.status, and the label used in metrics. Adding a code means
 * adding a row here (errors.test.ts fails if one is incomplete) and nowhere else.
 */

/** google.rpc.Code values used in CheckResponse.status. */
export const RpcCode = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;
export type RpcCode = (typeof RpcCode)[keyof typeof RpcCode];

export interface ErrorSpec {
  readonly httpStatus: number;
  readonly rpcCode: RpcCode;
  /** Prometheus label value: stable, lower_snake_case, never contains request data. */
  readonly metricLabel: string;
  /** One sentence for operators: what happened and what to look at. */
  readonly doc: string;
}

export const errorCodes = {
  MALFORMED_REQUEST: {
    httpStatus: 400,
    rpcCode: RpcCode.INVALID_ARGUMENT,
    metricLabel: 'malformed_request',
    doc: 'The CheckRequest lacks a field the decision needs (HTTP method, path or host); Envoy sent something the sidecar cannot evaluate.',
  },
  PATH_DENIED: {
    httpStatus: 403,
    rpcCode: RpcCode.PERMISSION_DENIED,
    metricLabel: 'path_denied',
    doc: 'The request path matches a path the policy denies.',
  },
  NOT_READY: {
    httpStatus: 503,
    rpcCode: RpcCode.UNAVAILABLE,
    metricLabel: 'not_ready',
    doc: 'No policy snapshot has loaded yet, so nothing can be decided; see the sidecar log for the configuration error.',
  },
  SHUTTING_DOWN: {
    httpStatus: 503,
    rpcCode: RpcCode.UNAVAILABLE,
    metricLabel: 'shutting_down',
    doc: 'The sidecar is draining after SIGTERM and accepts no new checks; Envoy should retry on another instance.',
  },
  DEADLINE_EXCEEDED: {
    httpStatus: 503,
    rpcCode: RpcCode.UNAVAILABLE,
    metricLabel: 'deadline_exceeded',
    doc: 'The decision did not finish within NOX_CHECK_DEADLINE_MS, which is kept below Envoy’s ext_authz timeout so Envoy always gets an answer from Nox.',
  },
  INTERNAL: {
    httpStatus: 500,
    rpcCode: RpcCode.INTERNAL,
    metricLabel: 'internal',
    doc: 'An unexpected error in a stage of the decision path; the log line with the same decision id has the cause.',
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof errorCodes;

export const allErrorCodes = Object.keys(errorCodes) as ErrorCode[];

export function errorSpec(code: ErrorCode): ErrorSpec {
  return errorCodes[code];
}
