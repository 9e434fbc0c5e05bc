import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Caller } from './auth.js';

/**
 * The audit log's security and session events that happen in the admin API rather than in a
 * decision: a revocation (security), a session ended by an administrator (session). Written in
 * the caller's transaction beside its admin action, with `nox-admin` as the writer, so the
 * security and session logs hold them whoever reads only those tables.
 */
const WRITER = 'nox-admin';

export async function recordSecurityEvent(
  c: pg.PoolClient,
  e: { kind: string; caller: Caller; sourceIp: string; reason?: string; subject?: string; detail: object },
): Promise<void> {
  const provider = e.subject?.slice(0, e.subject.indexOf(':')) || null;
  await c.query(
    `INSERT INTO audit_security_events (id, occurred_at, sidecar, kind, reason, provider, subject, source_ip, detail)
     VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8)`,
    [
      randomUUID(),
      WRITER,
      e.kind,
      e.reason ?? null,
      provider,
      e.subject ?? null,
      e.sourceIp || null,
      JSON.stringify({ ...e.detail, by: e.caller.username }),
    ],
  );
}

export async function recordSessionEvent(
  c: pg.PoolClient,
  e: {
    kind: string;
    caller: Caller;
    sourceIp: string;
    provider: string;
    subject: string;
    sessionHash: string;
    detail?: object;
  },
): Promise<void> {
  await c.query(
    `INSERT INTO audit_session_events (id, occurred_at, sidecar, kind, provider, subject, session_hash, source_ip, user_agent, detail)
     VALUES ($1, now(), $2, $3, $4, $5, $6, $7, NULL, $8)`,
    [
      randomUUID(),
      WRITER,
      e.kind,
      e.provider,
      e.subject,
      e.sessionHash,
      e.sourceIp || null,
      JSON.stringify({ ...e.detail, by: e.caller.username }),
    ],
  );
}
