import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { v7 as uuidv7 } from 'uuid';
import type { ErrorCode } from '../errors.js';
import type { Ctx } from '../pipeline/stage.js';
import type { CheckInput } from '../request/input.js';
import type { Decision } from '../request/outcome.js';
import type { AuditLog } from './auditLog.js';
import { type AuditRow, isoTime } from './tables.js';

/**
 * A session's life outside a decision (a login and a logout are the answers of their checks,
 * and audited as such): its tokens refreshed, or the session ended because the provider
 * refused the refresh (or the key that sealed its tokens is gone).
 */
export interface SessionEvent {
  readonly kind: 'refresh' | 'revocation';
  readonly provider: string;
  readonly subject: string;
  readonly sessionHash: string;
  readonly reason?: string;
}

/** What the checker knows of one check when it is answered. */
export interface DecidedCheck {
  readonly decision: Decision;
  /** Absent when the request could not be decoded (or no snapshot was loaded). */
  readonly input?: CheckInput;
  readonly ctx?: Ctx;
  readonly startedAt: number;
  readonly latencyUs: number;
}

/**
 * One audit event per decision, as the AccessPolicy's `audit.record` asks: every decision, or
 * denies only (a DryRun policy's would-be deny counts as one), or denies and a sample of
 * allows. Requests no policy governs (and those that could not be read) are always recorded
 * when denied: they are what an operator looks for first.
 */
export class DecisionAudit {
  constructor(
    private readonly log: AuditLog,
    /** This sidecar's name in the events (the pod name). */
    private readonly sidecar: string,
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * See AuditLog.record: undefined (buffered), a promise (Durable), or AuditUnavailable
   * thrown. A decision that is also a security or session event (securityKinds,
   * sessionKinds) is recorded there too, whatever the policy samples.
   */
  record(check: DecidedCheck): Promise<void> | undefined {
    const code = check.decision.allowed ? undefined : check.decision.deny.code;
    const security = code ? securityKinds[code] : undefined;
    // Not waited for on their own (a failed write is counted and logged by the log): the
    // decision's own record, written in the same or a later group, is.
    if (security)
      void this.log
        .record('audit_security_events', securityRow(check, security, this.sidecar))
        ?.catch(() => {});
    const session = code ? sessionKinds[code] : undefined;
    if (session)
      void this.log.record('audit_session_events', sessionRow(check, session, this.sidecar))?.catch(() => {});
    if (!this.#wanted(check)) return undefined;
    return this.log.record('audit_decisions', decisionRow(check, this.sidecar));
  }

  /** A session event outside a decision (a refresh, an end by the provider): always recorded. */
  sessionEvent(e: SessionEvent): void {
    try {
      void this.log
        .record('audit_session_events', {
          id: uuidv7(),
          occurred_at: isoTime(Date.now()),
          sidecar: this.sidecar,
          kind: e.kind,
          provider: e.provider,
          subject: e.subject,
          session_hash: e.sessionHash,
          source_ip: null,
          user_agent: null,
          detail: JSON.stringify(e.reason ? { reason: e.reason } : {}),
        })
        ?.catch(() => {});
    } catch {
      // A full spool (Deny) or a closed log: counted and logged by the log; a session event
      // never fails the request that caused it.
    }
  }

  #wanted({ decision, ctx }: DecidedCheck): boolean {
    const policy = ctx?.accessPolicy?.audit;
    if (!decision.allowed || ctx?.wouldDeny || !policy || policy.record === 'All') return true;
    if (policy.record === 'Denies') return false;
    return this.random() < policy.allowSampleRate;
  }
}

export function decisionRow(
  { decision, input, ctx, startedAt, latencyUs }: DecidedCheck,
  sidecar: string,
): AuditRow<'audit_decisions'> {
  const id = ctx?.identity;
  return {
    // The decision id is a UUID (v7, time-ordered) made per check, and the row's key: a replay
    // is a no-op.
    id: uuidOr(decision.decisionId),
    occurred_at: isoTime(startedAt),
    sidecar,
    // Envoy's x-request-id: what its access log and the upstream see (http.id is only the stream's).
    request_id: input?.headers['x-request-id'] || input?.requestId || null,
    host: input?.host ?? null,
    method: input?.method ?? null,
    path: input?.path ?? null,
    source_ip: ipOrNull(input?.sourceAddress),
    policy: ctx?.accessPolicy?.key.slice('AccessPolicy/'.length) ?? null,
    rule: ctx?.accessRule ?? null,
    provider: id?.provider ?? null,
    subject: id?.subject ?? null,
    client_id: id?.clientId ?? null,
    groups_hash: id && id.groups.length > 0 ? groupsHash(id.groups) : null,
    identity_method: id?.method ?? null,
    decision: decision.allowed ? 'allow' : 'deny',
    code: decision.allowed ? 'ok' : decision.deny.code,
    reason: decision.allowed ? null : decision.deny.reason,
    would_deny: ctx?.wouldDeny?.code ?? null,
    quota_tier: ctx?.quota?.tier ?? null,
    quota_remaining: ctx?.quota?.remaining ?? null,
    risk_score: ctx?.risk?.score ?? null,
    latency_us: Math.max(0, Math.round(latencyUs)),
    snapshot_version: decision.snapshotVersion,
    risk_model: ctx?.risk ? (ctx.riskModel?.key.slice('RiskModel/'.length) ?? null) : null,
    risk_action: ctx?.risk?.action ?? null,
    risk_features: ctx?.risk ? JSON.stringify(ctx.risk.features) : null,
  };
}

/** Deny codes that are security events: what was refused, and why, for the security log. */
const securityKinds: Partial<Record<ErrorCode, string>> = {
  UNAUTHENTICATED: 'bad_credential',
  PATH_AMBIGUOUS: 'path_ambiguous',
  MALFORMED_REQUEST: 'malformed_request',
  LOGIN_FAILED: 'login_failed',
  LOGOUT_REFUSED: 'logout_refused',
};

/** Answers that end a browser login or logout: session events. */
const sessionKinds: Partial<Record<ErrorCode, 'login' | 'logout'>> = {
  LOGIN_COMPLETE: 'login',
  LOGOUT: 'logout',
};

function securityRow(check: DecidedCheck, kind: string, sidecar: string): AuditRow<'audit_security_events'> {
  const { decision, input, ctx } = check;
  return {
    id: uuidv7(),
    occurred_at: isoTime(check.startedAt),
    sidecar,
    kind,
    reason: decision.allowed ? null : decision.deny.reason,
    provider: ctx?.identity?.provider ?? null,
    subject: ctx?.identity?.subject ?? null,
    source_ip: ipOrNull(input?.sourceAddress),
    detail: JSON.stringify({
      decisionId: decision.decisionId,
      ...(input ? { host: input.host, method: input.method, path: input.path } : {}),
    }),
  };
}

function sessionRow(
  check: DecidedCheck,
  kind: 'login' | 'logout',
  sidecar: string,
): AuditRow<'audit_session_events'> {
  const { decision, input, ctx } = check;
  return {
    id: uuidv7(),
    occurred_at: isoTime(check.startedAt),
    sidecar,
    kind,
    provider: ctx?.identity?.provider ?? null,
    subject: ctx?.identity?.subject ?? null,
    session_hash: null,
    source_ip: ipOrNull(input?.sourceAddress),
    user_agent: input?.headers['user-agent'] ?? null,
    detail: JSON.stringify({ decisionId: decision.decisionId, ...(input ? { host: input.host } : {}) }),
  };
}

/** SHA-256 of the sorted groups, 128 bits in hex: equal sets compare, the names stay out. */
export function groupsHash(groups: readonly string[]): string {
  // An identity is cached with its token, so the same groups array comes back check after check.
  let hash = groupsHashes.get(groups);
  if (hash === undefined) {
    hash = createHash('sha256')
      .update([...groups].sort().join('\n'))
      .digest('hex')
      .slice(0, 32);
    groupsHashes.set(groups, hash);
  }
  return hash;
}
const groupsHashes = new WeakMap<readonly string[], string>();

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const uuidOr = (s: string) => (UUID.test(s) ? s : uuidv7());

/** Envoy's source address is an IP; anything else (a pipe, empty) is not stored as inet. */
const ipOrNull = (s: string | undefined) => (s && isIP(s) ? s : null);
