import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { checkContext, checkInput, routedPolicy } from '../../test/harness/checks.js';
import { FanoutGuards } from '../identity/fanout.js';
import { compileSnapshot } from '../policy/compile.js';
import { DirSecretStore } from '../secrets/dirSecretStore.js';
import { Login } from './login.js';
import { SessionMethod } from './sessionMethod.js';
import { MemorySessionStore, newSessionId, type SessionRecord, sessionHash } from './sessionStore.js';

/** The in-process store, counting its reads: what a Redis GET would be. */
class CountingStore extends MemorySessionStore {
  reads = 0;
  override async get(hash: string): Promise<SessionRecord | undefined> {
    this.reads++;
    await new Promise((r) => setImmediate(r)); // a read takes a turn of the event loop, as Redis does
    return super.get(hash);
  }
}

const log = createLogger('session-method-test', { level: 'silent' });
const snapshot = compileSnapshot(
  {
    resources: [
      {
        apiVersion: 'nox.dev/v1alpha1',
        kind: 'OAuth2Provider',
        metadata: { name: 'corp', namespace: 'team-a' },
        spec: {
          type: 'oidc',
          issuer: 'http://127.0.0.1:9',
          clientId: 'web',
          login: {
            enabled: true,
            callbackPath: '/oauth2/callback',
            encryptionKeySecretRef: { name: 'corp-session', key: 'key' },
          },
        },
        origin: 'test',
      },
    ],
    problems: [],
  },
  undefined,
  1,
);
if (snapshot.rejected.length > 0) throw new Error(JSON.stringify(snapshot.rejected));

function setup() {
  const store = new CountingStore();
  const secrets = new DirSecretStore({
    dir: mkdtempSync(join(tmpdir(), 'nox-session-')),
    log,
    pollMs: 60_000,
  });
  const method = new SessionMethod(new Login(store, secrets, log, new Registry()));
  const registry = new Registry();
  method.attach({ guards: new FanoutGuards(registry) });
  const policy = routedPolicy({ providers: ['corp'] });
  const identify = (...ids: string[]) =>
    method.identify(
      checkInput({ headers: { cookie: ids.map((id) => `__Host-nox_session=${id}`).join('; ') } }),
      checkContext({ snapshot }),
      policy,
    );
  const session = async () => {
    const id = newSessionId();
    const now = Date.now();
    await store.create(
      sessionHash(id),
      {
        v: 1,
        provider: 'team-a/corp',
        subject: 'corp:alice',
        claims: { sub: 'alice' },
        scopes: [],
        tokens: '',
        hasRefreshToken: false,
        accessExpiresAt: 0,
        createdAt: now,
        expiresAt: now + 3_600_000,
      },
      3_600_000,
    );
    return id;
  };
  return { store, identify, session, registry };
}

describe('SessionMethod: at most one session lookup per request', () => {
  it('reads the store once for a request with many session cookies, and not again for the same made-up id', async () => {
    const { store, identify, registry } = setup();
    const ids = Array.from({ length: 10 }, () => newSessionId());
    expect(await identify('garbage', ...ids)).toEqual({ kind: 'absent' });
    expect(store.reads).toBe(1);
    expect(await identify(ids[0]!)).toEqual({ kind: 'absent' });
    expect(store.reads).toBe(1); // known missing: answered locally
    const hits = (await registry.getSingleMetric('nox_identity_negative_cache_hits_total')!.get()).values;
    expect(hits).toEqual([{ labels: { method: 'session' }, value: 1 }]);
  });

  it('skips ids known to be missing and looks up the first other one', async () => {
    const { store, identify, session } = setup();
    const stale = newSessionId();
    await identify(stale);
    const live = await session();
    const r = await identify(stale, live);
    expect(r.kind === 'identified' && r.identity.subject).toBe('corp:alice');
    expect(store.reads).toBe(2);
  });

  it('looks up only the first well-formed id: a live session behind a new made-up id is not read', async () => {
    const { store, identify, session } = setup();
    const live = await session();
    expect(await identify(newSessionId(), live)).toEqual({ kind: 'absent' });
    expect(store.reads).toBe(1);
  });

  it('shares one read among concurrent requests with the same cookie', async () => {
    const { store, identify, session } = setup();
    const live = await session();
    const results = await Promise.all(Array.from({ length: 20 }, () => identify(live)));
    expect(results.every((r) => r.kind === 'identified')).toBe(true);
    expect(store.reads).toBe(1);
  });
});
