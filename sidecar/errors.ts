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
  NO_POLICY: {
    httpStatus: 403,
    rpcCode: RpcCode.PERMISSION_DENIED,
    metricLabel: 'no_policy',
    doc: 'No AccessPolicy matches the request’s host, path and method; Nox denies routes nobody has declared.',
  },
  UNAUTHENTICATED: {
    httpStatus: 401,
    rpcCode: RpcCode.UNAUTHENTICATED,
    metricLabel: 'unauthenticated',
    doc: 'A credential was presented but is not valid here: bad signature, wrong issuer or audience, expired, a disallowed algorithm, too large, or from a provider this route does not accept.',
  },
  IDENTITY_PROVIDER_UNAVAILABLE: {
    httpStatus: 503,
    rpcCode: RpcCode.UNAVAILABLE,
    metricLabel: 'identity_provider_unavailable',
    doc: 'The provider’s keys (discovery or JWKS) cannot be fetched and none is cached, so the token cannot be checked.',
  },
  PATH_AMBIGUOUS: {
    httpStatus: 403,
    rpcCode: RpcCode.PERMISSION_DENIED,
    metricLabel: 'path_ambiguous',
    doc: 'The path reads differently on different kinds of server (path parameters, a trailing slash, letter case) and the readings fall under different AccessPolicies; the reason names both.',
  },
  IDENTITY_DEPENDENCY_BUSY: {
    httpStatus: 503,
    rpcCode: RpcCode.UNAVAILABLE,
    metricLabel: 'identity_dependency_busy',
    doc: 'A credential needed a remote check (session store, TokenReview, introspection, GitHub API) and that dependency was at its concurrency or rate bound, so it was not asked (Retry-After: 1); see nox_identity_dependency_rejected_total.',
  },
  ACCESS_DENIED: {
    httpStatus: 403,
    rpcCode: RpcCode.PERMISSION_DENIED,
    metricLabel: 'access_denied',
    doc: 'An AccessPolicy rule, or the policy’s defaultAction, denies the request; the reason names the policy and rule.',
  },
  CHALLENGE_REQUIRED: {
    httpStatus: 401,
    rpcCode: RpcCode.UNAUTHENTICATED,
    metricLabel: 'challenge_required',
    doc: 'An AccessPolicy rule asks for a fresh or stronger login (step-up) that the caller has not done.',
  },
  LOGIN_REDIRECT: {
    httpStatus: 302,
    rpcCode: RpcCode.UNAUTHENTICATED,
    metricLabel: 'login_redirect',
    doc: 'An anonymous browser on a route whose AccessPolicy offers login is sent to the provider (Location) with a short-lived pre-login cookie holding state, nonce and PKCE verifier.',
  },
  LOGIN_PAGE: {
    httpStatus: 200,
    rpcCode: RpcCode.UNAUTHENTICATED,
    metricLabel: 'login_page',
    doc: 'Nox answers with a small HTML page of its own: the provider chooser when a route offers several, or the same-site hop after a login with a SameSite=Strict session cookie.',
  },
  LOGIN_COMPLETE: {
    httpStatus: 302,
    rpcCode: RpcCode.UNAUTHENTICATED,
    metricLabel: 'login_complete',
    doc: 'The provider sent the browser back to the callback path, the code was exchanged and the session stored; the browser goes back to the page it first asked for, with its session cookie.',
  },
  LOGIN_FAILED: {
    httpStatus: 401,
    rpcCode: RpcCode.UNAUTHENTICATED,
    metricLabel: 'login_failed',
    doc: 'A request on a callback path that does not complete a login: no or forged state, a missing, tampered or expired pre-login cookie, a replayed callback, or a code or ID token the provider or Nox rejected; the reason says which.',
  },
  LOGOUT: {
    httpStatus: 302,
    rpcCode: RpcCode.UNAUTHENTICATED,
    metricLabel: 'logout',
    doc: 'A logout POST from this site: the session is ended on every sidecar, its cookie cleared, and the browser sent to the provider’s end-session endpoint (or postLogoutRedirect, or the default page).',
  },
  LOGOUT_CONFIRM: {
    httpStatus: 200,
    rpcCode: RpcCode.UNAUTHENTICATED,
    metricLabel: 'logout_confirm',
    doc: 'A browser opened a logout path (GET): logout is a POST, so Nox answers with a page whose button posts it, with a token only this session can have; nothing has ended yet.',
  },
  LOGOUT_REFUSED: {
    httpStatus: 403,
    rpcCode: RpcCode.PERMISSION_DENIED,
    metricLabel: 'logout_refused',
    doc: 'A logout POST that cannot be shown to come from this site (another Origin or Sec-Fetch-Site, and no valid logout token): cross-site request forgery is refused and the session stays.',
  },
  LOGOUT_METHOD: {
    httpStatus: 405,
    rpcCode: RpcCode.UNAUTHENTICATED,
    metricLabel: 'logout_method',
    doc: 'A logout path asked with a method other than POST by a client that is not a browser (no page to confirm on); the Allow header says POST.',
  },
  SESSION_STORE_UNAVAILABLE: {
    httpStatus: 503,
    rpcCode: RpcCode.UNAVAILABLE,
    metricLabel: 'session_store_unavailable',
    doc: 'The session store (Redis) did not answer, so a login could not be stored or a logout recorded; sessions are never assumed.',
  },
  QUOTA_EXCEEDED: {
    httpStatus: 429,
    rpcCode: RpcCode.RESOURCE_EXHAUSTED,
    metricLabel: 'quota_exceeded',
    doc: 'The subject has used its quota for a window of its tier; Retry-After and RateLimit say when it resets.',
  },
  QUOTA_SUBJECT_MISSING: {
    httpStatus: 401,
    rpcCode: RpcCode.UNAUTHENTICATED,
    metricLabel: 'quota_subject_missing',
    doc: 'A QuotaPolicy counts per subject, and the request lacks a part of the subject (no identity, no API key header, ...) or carries it unverified (an API key the identify stage did not verify, a Header part without an authenticated caller).',
  },
  QUOTA_STORE_UNAVAILABLE: {
    httpStatus: 503,
    rpcCode: RpcCode.UNAVAILABLE,
    metricLabel: 'quota_store_unavailable',
    doc: 'The quota store (Redis) did not answer in time or failed, and the QuotaPolicy’s failureMode is Closed.',
  },
  RISK_CHALLENGE: {
    httpStatus: 401,
    rpcCode: RpcCode.UNAUTHENTICATED,
    metricLabel: 'risk_challenge',
    doc: 'The request’s risk score reached the RiskModel’s challenge threshold: the caller must authenticate again (step-up, RFC 9470 insufficient_user_authentication).',
  },
  RISK_DENIED: {
    httpStatus: 403,
    rpcCode: RpcCode.PERMISSION_DENIED,
    metricLabel: 'risk_denied',
    doc: 'The request’s risk score reached the RiskModel’s deny (or block) threshold; the reason gives the score and the model.',
  },
  RISK_UNAVAILABLE: {
    httpStatus: 503,
    rpcCode: RpcCode.UNAVAILABLE,
    metricLabel: 'risk_unavailable',
    doc: 'The RiskModel’s model is not loaded (missing, refused) or its inference failed, and its failureMode is Closed.',
  },
  AUDIT_UNAVAILABLE: {
    httpStatus: 503,
    rpcCode: RpcCode.UNAVAILABLE,
    metricLabel: 'audit_unavailable',
    doc: 'The decision’s audit event could not be recorded (the audit spool is full and its policy is Deny, or the spool could not be written), so the request is refused rather than served unaudited.',
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
