import { createHash, randomBytes } from 'node:crypto';
import type { RedisOptions } from 'ioredis';
import type { Logger } from '../../common/logger.js';
import { connectRedis, type RedisClient, type RedisTarget } from '../redis/connect.js';
import type { SessionRecord, SessionStore } from './sessionStore.js';

export interface RedisSessionStoreOptions extends RedisTarget {
  /** A session read or write not answered within this fails (the request is denied, never let through). */
  readonly timeoutMs: number;
  readonly log: Logger;
}

/** Revocations are broadcast here; the message is the session hash, never the id. */
const activeIndex = '{nox:s}:active';
const revokedChannel = 'nox:s:revoked';

// The braces are a hash tag: a session, its lock and nothing else share one Cluster slot.
const sessionKey = (hash: string) => `nox:s:{${hash}}`;
const lockKey = (hash: string) => `nox:s:{${hash}}:lock`;
const onceKey = (key: string) => `nox:l:{${key}}`;
/**
 * A subject's sessions (the admin API lists and revokes them): a sorted set of session hashes
 * scored by expiry, in the slot of the subject's hash, expiring with its last session. The
 * subject is hashed, as quota keys are: no user id in a key name.
 */
const subjectKey = (subject: string) =>
  `nox:s:u:{${createHash('sha256').update(subject).digest('base64url').slice(0, 22)}}`;

// One call, atomic: add the session, drop the index's expired members, and make the index live
// as long as its longest session (PTTL is -1 on a new key: always set then).
const indexScript = `redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local want = tonumber(ARGV[1]) - tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < want then redis.call('PEXPIRE', KEYS[1], want) end
return 1`;

const unlockScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

type Client = RedisClient;

/**
 * Sessions in Redis or Redis Cluster, shared by every sidecar: one key per session (JSON,
 * expiring with the session), a lock key beside it for refreshes, and a pub/sub channel
 * that tells every sidecar to drop a revoked session from its local cache.
 */
export class RedisSessionStore implements SessionStore {
  readonly name: string;
  readonly #client: Client;
  readonly #subscriber: Client;
  readonly #listeners: ((hash: string) => void)[] = [];

  constructor(opts: RedisSessionStoreOptions) {
    this.name = opts.cluster ? 'redis-cluster' : 'redis';
    this.#client = connect(opts, {
      commandTimeout: opts.timeoutMs,
      // Fail fast while disconnected: a request waits for nothing that is not coming.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
    });
    // The subscriber queues its SUBSCRIBE until connected, and ioredis re-subscribes after a reconnect.
    this.#subscriber = connect(opts, {});
    for (const [c, role] of [
      [this.#client, 'sessions'],
      [this.#subscriber, 'revocations'],
    ] as const) {
      c.on('error', (err: Error) => opts.log.warn({ err: err.message, role }, 'session store redis error'));
    }
    let connectedBefore = false;
    this.#subscriber.on('ready', () => {
      // Messages published while the subscription was down are lost: caches start over.
      if (connectedBefore) this.#emit('*');
      connectedBefore = true;
    });
    this.#subscriber.on('message', (channel: string, hash: string) => {
      if (channel === revokedChannel) this.#emit(hash);
    });
    void this.#subscriber.subscribe(revokedChannel).catch((e: unknown) => {
      opts.log.error({ err: String(e) }, 'cannot subscribe to session revocations');
    });
  }

  /** Resolves once both connections are up (startup). */
  async ready(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const c of [this.#client, this.#subscriber]) {
      while (c.status !== 'ready') {
        if (Date.now() > deadline) throw new Error(`session store redis not ready after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  }

  async get(hash: string): Promise<SessionRecord | undefined> {
    const raw = await this.#client.get(sessionKey(hash));
    return raw === null ? undefined : (JSON.parse(raw) as SessionRecord);
  }

  async create(hash: string, record: SessionRecord, ttlMs: number): Promise<void> {
    // The index's expiry is read before the key is written, so it never outlives the key (whose
    // TTL starts when Redis runs the SET): an expired session is never counted as active.
    const expiresAt = Date.now() + ttlMs;
    await this.#client.set(sessionKey(hash), JSON.stringify(record), 'PX', Math.max(1, Math.ceil(ttlMs)));
    // Both indexes in one round trip (two commands on the wire at once). The count's index
    // (one slot; scored by expiry) only undercounts when an entry is lost; the subject's index
    // is what the admin API lists a subject's sessions by, so its failure fails the login.
    await Promise.all([
      this.#client.zadd(activeIndex, expiresAt, hash).catch(() => undefined),
      this.#client.eval(indexScript, 1, subjectKey(record.subject), expiresAt, hash, Date.now()),
    ]);
  }

  async bySubject(subject: string, limit: number): Promise<{ hash: string; record: SessionRecord }[]> {
    const hashes = await this.#client.zrangebyscore(
      subjectKey(subject),
      Date.now(),
      '+inf',
      'LIMIT',
      0,
      limit,
    );
    // Each session is a key of its own slot: the reads go out together, not one after another.
    const raws = await Promise.all(hashes.map((h) => this.#client.get(sessionKey(h))));
    const found: { hash: string; record: SessionRecord }[] = [];
    raws.forEach((raw, i) => {
      if (raw === null) return; // revoked or expired since it was indexed
      const record = JSON.parse(raw) as SessionRecord;
      if (record.subject === subject) found.push({ hash: hashes[i]!, record });
    });
    return found;
  }

  async active(): Promise<number> {
    await this.#client.zremrangebyscore(activeIndex, '-inf', Date.now());
    return this.#client.zcard(activeIndex);
  }

  async replace(hash: string, record: SessionRecord): Promise<boolean> {
    // XX: a session revoked during a refresh is not brought back; KEEPTTL: its lifetime is not extended.
    return (await this.#client.set(sessionKey(hash), JSON.stringify(record), 'KEEPTTL', 'XX')) === 'OK';
  }

  async revoke(hash: string): Promise<boolean> {
    // GETDEL: deleted, and its subject known for the subject's index, in one round trip.
    const raw = await this.#client.getdel(sessionKey(hash));
    const subject = raw === null ? undefined : subjectOfRaw(raw);
    await Promise.all([
      this.#client.zrem(activeIndex, hash).catch(() => undefined),
      subject === undefined ? undefined : this.#client.zrem(subjectKey(subject), hash).catch(() => undefined),
      this.#client.publish(revokedChannel, hash),
    ]);
    return raw !== null;
  }

  async tryLock(hash: string, ttlMs: number): Promise<string | undefined> {
    const token = randomBytes(12).toString('base64url');
    const ok = await this.#client.set(lockKey(hash), token, 'PX', Math.ceil(ttlMs), 'NX');
    return ok === 'OK' ? token : undefined;
  }

  async unlock(hash: string, token: string): Promise<void> {
    // Only the holder deletes: a lock that expired and was taken by another sidecar stays theirs.
    await this.#client.eval(unlockScript, 1, lockKey(hash), token);
  }

  async firstUse(key: string, ttlMs: number): Promise<boolean> {
    return (await this.#client.set(onceKey(key), '1', 'PX', Math.ceil(ttlMs), 'NX')) === 'OK';
  }

  onRevoked(listener: (hash: string) => void): void {
    this.#listeners.push(listener);
  }

  async close(): Promise<void> {
    this.#subscriber.disconnect();
    this.#client.disconnect();
  }

  #emit(hash: string): void {
    for (const l of this.#listeners) l(hash);
  }
}

/** The subject of a stored session; undefined when the value is not a session (never throws: revoke must go on). */
function subjectOfRaw(raw: string): string | undefined {
  try {
    const s = (JSON.parse(raw) as Partial<SessionRecord>).subject;
    return typeof s === 'string' ? s : undefined;
  } catch {
    return undefined;
  }
}

/** The session store's connections follow a Cluster's slot map the same way; only `extra` differs. */
function connect(opts: RedisSessionStoreOptions, extra: RedisOptions): Client {
  return connectRedis(opts, extra, {
    enableOfflineQueue: extra.enableOfflineQueue ?? true,
    slotsRefreshTimeout: 1000,
    retryDelayOnFailover: 50,
    retryDelayOnClusterDown: 50,
    maxRedirections: 4,
  });
}
