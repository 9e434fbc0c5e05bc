import { createHash } from 'node:crypto';
import type pg from 'pg';
import { Counter, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import type { Identity } from '../request/identity.js';

export interface ProfileSource {
  /** OAuth2Provider "namespace/name": the users table's provider column. */
  readonly providerKey: string;
  /** Whether this provider's users may be linked to other providers' users by verified email. */
  readonly linkByEmail: boolean;
}

/**
 * Keeps the users table in step with who signs in: the first time a subject is seen it is
 * created, later changes (email, name, groups) update it. Off the request path: `seen` only
 * queues, a timer writes, and an unchanged profile is written at most every `minIntervalMs`.
 */
export class ProfileSync {
  readonly #queue = new Map<string, { identity: Identity; source: ProfileSource }>();
  readonly #written = new Map<string, { digest: string; at: number }>();
  readonly #timer: NodeJS.Timeout;
  readonly #writes: Counter<'result'>;

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    registry: Registry,
    /** OAuth2Provider keys whose spec allows linking by email, from the snapshot in force. */
    private readonly linkingProviders: () => readonly string[],
    private readonly minIntervalMs = 600_000,
    intervalMs = 2000,
  ) {
    this.#writes = new Counter({
      name: 'nox_identity_profile_writes_total',
      help: 'User profiles written to PostgreSQL: created, updated, linked, error.',
      labelNames: ['result'],
      registers: [registry],
    });
    this.#timer = setInterval(() => void this.flush(), intervalMs);
    this.#timer.unref();
  }

  seen(identity: Identity, source: ProfileSource, now = Date.now()): void {
    const digest = profileDigest(identity);
    const last = this.#written.get(identity.subject);
    if (last && last.digest === digest && now - last.at < this.minIntervalMs) return;
    this.#queue.set(identity.subject, { identity, source });
  }

  async flush(): Promise<void> {
    const batch = [...this.#queue.values()];
    this.#queue.clear();
    for (const { identity, source } of batch) {
      try {
        await this.#upsert(identity, source);
        this.#written.set(identity.subject, { digest: profileDigest(identity), at: Date.now() });
      } catch (e) {
        this.#writes.inc({ result: 'error' });
        this.log.warn(
          { err: (e as Error).message, provider: source.providerKey },
          'user profile not written; retrying later',
        );
        this.#queue.set(identity.subject, { identity, source });
      }
    }
  }

  async #upsert(id: Identity, source: ProfileSource): Promise<void> {
    const p = profile(id);
    const sub = id.subject.slice(id.provider.length + 1);
    const { rows } = await this.pool.query<{ id: string; inserted: boolean; linked_user_id: string | null }>(
      `INSERT INTO users (provider, subject, email, email_verified, name, avatar_url, groups, last_login_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, now())
       ON CONFLICT (provider, subject) DO UPDATE SET email = excluded.email, email_verified = excluded.email_verified,
         name = excluded.name, avatar_url = excluded.avatar_url, groups = excluded.groups, last_login_at = now()
       RETURNING id, (xmax = 0) AS inserted, linked_user_id`,
      [source.providerKey, sub, p.email, p.emailVerified, p.name, p.picture, p.groups],
    );
    const row = rows[0]!;
    this.#writes.inc({ result: row.inserted ? 'created' : 'updated' });
    if (!source.linkByEmail || !p.email || !p.emailVerified || row.linked_user_id) return;
    // Link to the oldest verified account with this email whose provider allows linking too.
    const link = await this.pool.query(
      `UPDATE users SET linked_user_id = other.id FROM (
         SELECT id FROM users WHERE lower(email) = lower($2) AND email_verified AND id <> $1
           AND provider = ANY($3::text[]) ORDER BY created_at LIMIT 1) other
       WHERE users.id = $1 RETURNING users.id`,
      [row.id, p.email, [...this.linkingProviders()]],
    );
    if (link.rowCount) this.#writes.inc({ result: 'linked' });
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }
}

/**
 * The digest of what is written of an identity. An identity is cached with its token and
 * never changed, so the same object comes back check after check: its digest is kept with it
 * (a SHA-256 of its JSON was some 6 000 instructions per check).
 */
function profileDigest(identity: Identity): string {
  let digest = digests.get(identity);
  if (digest === undefined) {
    digest = createHash('sha256')
      .update(JSON.stringify(profile(identity)))
      .digest('base64url');
    digests.set(identity, digest);
  }
  return digest;
}
const digests = new WeakMap<Identity, string>();

function profile(id: Identity) {
  const c = id.claims as Record<string, unknown>;
  return {
    email: id.email ?? null,
    emailVerified: id.emailVerified === true,
    name: typeof c.name === 'string' ? c.name : null,
    picture:
      typeof c.picture === 'string' ? c.picture : typeof c.avatar_url === 'string' ? c.avatar_url : null,
    groups: [...id.groups],
  };
}
