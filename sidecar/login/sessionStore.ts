import { createHash, randomBytes } from 'node:crypto';

/** One browser session. Identity fields are plain (every request reads them); tokens are sealed. */
export interface SessionRecord {
  readonly v: 1;
  /** The OAuth2Provider, "namespace/name". */
  readonly provider: string;
  /** Provider-qualified subject, "<provider>:<sub>". */
  readonly subject: string;
  /** Claims of the last ID token. */
  readonly claims: Readonly<Record<string, unknown>>;
  /** Scopes granted with the access token. */
  readonly scopes: readonly string[];
  /** `{access, refresh, id}` sealed with the provider's key (purpose session-tokens, bound to the session hash). */
  readonly tokens: string;
  readonly hasRefreshToken: boolean;
  /** When the access token expires (ms since the epoch); 0 when the provider did not say. */
  readonly accessExpiresAt: number;
  readonly createdAt: number;
  /** createdAt + sessionTTL: the session never outlives it, refreshed or not. */
  readonly expiresAt: number;
  readonly refreshedAt?: number;
}

export interface SealedTokens {
  readonly access: string;
  readonly refresh?: string | undefined;
  readonly id?: string | undefined;
}

/**
 * Where sessions live: Redis (shared by every sidecar) or memory (standalone). Sessions are
 * addressed by the sha256 of their id, so neither the store nor its logs ever hold the
 * cookie value; `sessionHash` turns an id into that address.
 */
export interface SessionStore {
  readonly name: string;
  get(hash: string): Promise<SessionRecord | undefined>;
  create(hash: string, record: SessionRecord, ttlMs: number): Promise<void>;
  /** Overwrites a session that still exists, keeping its expiry; false when it is gone (revoked, expired). */
  replace(hash: string, record: SessionRecord): Promise<boolean>;
  /** Ends the session everywhere: deleted, and every sidecar told to drop its cached copy. */
  revoke(hash: string): Promise<boolean>;
  /** A short exclusive lock on one session (refresh); a token to unlock with, or undefined if someone holds it. */
  tryLock(hash: string, ttlMs: number): Promise<string | undefined>;
  unlock(hash: string, token: string): Promise<void>;
  /** True the first time a key is seen within ttlMs, false on every repeat (single-use login state). */
  firstUse(key: string, ttlMs: number): Promise<boolean>;
  /** Sessions not yet expired or revoked (for the active-sessions gauge; read per scrape, never per request). */
  active(): Promise<number>;
  /**
   * The live sessions of one subject ("<provider>:<sub>"), at most `limit`, by hash (the admin
   * API lists them; never on the request path). Sessions made before the subject index existed
   * are not found.
   */
  bySubject(subject: string, limit: number): Promise<{ hash: string; record: SessionRecord }[]>;
  /** Called with the hash of each revoked session (from any sidecar), and with '*' when some may have been missed. */
  onRevoked(listener: (hash: string) => void): void;
  close(): Promise<void>;
}

/** A new session id: 256 random bits, base64url (43 characters). */
export function newSessionId(): string {
  return randomBytes(32).toString('base64url');
}

export function isSessionId(s: string): boolean {
  return /^[A-Za-z0-9_-]{43}$/.test(s);
}

export function sessionHash(id: string): string {
  return createHash('sha256').update(id).digest('hex');
}

/** In-process sessions for standalone mode: one sidecar, nothing shared, nothing survives a restart. */
export class MemorySessionStore implements SessionStore {
  readonly name = 'memory';
  readonly #sessions = new Map<string, { record: SessionRecord; until: number }>();
  readonly #locks = new Map<string, { token: string; until: number }>();
  readonly #used = new Map<string, number>();
  readonly #listeners: ((hash: string) => void)[] = [];
  #writes = 0;

  async get(hash: string): Promise<SessionRecord | undefined> {
    const s = this.#sessions.get(hash);
    if (!s) return undefined;
    if (s.until <= Date.now()) {
      this.#sessions.delete(hash);
      return undefined;
    }
    return s.record;
  }

  async create(hash: string, record: SessionRecord, ttlMs: number): Promise<void> {
    this.#sessions.set(hash, { record, until: Date.now() + ttlMs });
    if (++this.#writes % 1000 === 0) this.#sweep();
  }

  async replace(hash: string, record: SessionRecord): Promise<boolean> {
    const s = this.#sessions.get(hash);
    if (!s || s.until <= Date.now()) return false;
    this.#sessions.set(hash, { record, until: s.until });
    return true;
  }

  async active(): Promise<number> {
    const now = Date.now();
    let n = 0;
    for (const s of this.#sessions.values()) if (s.until > now) n++;
    return n;
  }

  async bySubject(subject: string, limit: number): Promise<{ hash: string; record: SessionRecord }[]> {
    const now = Date.now();
    const found: { hash: string; record: SessionRecord }[] = [];
    for (const [hash, s] of this.#sessions) {
      if (found.length >= limit) break;
      if (s.until > now && s.record.subject === subject) found.push({ hash, record: s.record });
    }
    return found;
  }

  async revoke(hash: string): Promise<boolean> {
    const existed = this.#sessions.delete(hash);
    for (const l of this.#listeners) l(hash);
    return existed;
  }

  async tryLock(hash: string, ttlMs: number): Promise<string | undefined> {
    const held = this.#locks.get(hash);
    if (held && held.until > Date.now()) return undefined;
    const token = randomBytes(12).toString('base64url');
    this.#locks.set(hash, { token, until: Date.now() + ttlMs });
    return token;
  }

  async unlock(hash: string, token: string): Promise<void> {
    if (this.#locks.get(hash)?.token === token) this.#locks.delete(hash);
  }

  async firstUse(key: string, ttlMs: number): Promise<boolean> {
    const until = this.#used.get(key);
    if (until !== undefined && until > Date.now()) return false;
    this.#used.set(key, Date.now() + ttlMs);
    if (++this.#writes % 1000 === 0) this.#sweep();
    return true;
  }

  onRevoked(listener: (hash: string) => void): void {
    this.#listeners.push(listener);
  }

  async close(): Promise<void> {
    this.#sessions.clear();
  }

  #sweep(): void {
    const now = Date.now();
    for (const [k, s] of this.#sessions) if (s.until <= now) this.#sessions.delete(k);
    for (const [k, until] of this.#used) if (until <= now) this.#used.delete(k);
    for (const [k, l] of this.#locks) if (l.until <= now) this.#locks.delete(k);
  }
}
