import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import type { AccessPolicySpec } from '../../common/resources/types.gen.js';
import { checkContext, checkInput, routedPolicy } from '../../test/harness/checks.js';
import { testLog } from '../../test/harness/log.js';
import { waitUntil } from '../../test/harness/process.js';
import { DirSecretStore } from '../secrets/dirSecretStore.js';
import { ApiKeyMethod } from './apiKeyMethod.js';

const log = createLogger('api-key-test', { level: 'silent' });
const input = (headers: Record<string, string>) => checkInput({ headers });
const ctx = checkContext();
const policy = (apiKeys: AccessPolicySpec['apiKeys']) =>
  routedPolicy(apiKeys ? { apiKeys } : {}, 'AccessPolicy/team-a/api');
const apiKeys = { selector: { 'nox.dev/api-key': 'true' }, header: 'X-API-Key', key: 'key' };

describe('ApiKeyMethod', () => {
  let root: string;
  let store: DirSecretStore;
  let method: ApiKeyMethod;
  const secret = (ns: string, name: string, key: string, labels = 'nox.dev/api-key="true"') => {
    mkdirSync(join(root, ns, name), { recursive: true });
    writeFileSync(join(root, ns, name, 'key'), key);
    writeFileSync(join(root, ns, name, '..labels'), labels);
  };

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'nox-apikeys-'));
    secret('team-a', 'ci-bot', 'ak_live_1234567890\n'); // as `kubectl create secret --from-file` leaves it
    secret('team-a', 'partner', 'ak_live_partner');
    secret('team-a', 'unlabelled', 'ak_live_unlabelled', 'other="x"');
    secret('team-b', 'other-team', 'ak_live_other_team');
    store = new DirSecretStore({ dir: root, log, pollMs: 100 });
    await store.start();
    method = new ApiKeyMethod(store);
  });
  afterAll(async () => {
    await store.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('names the caller after the Secret holding the presented key', () => {
    const r = method.identify(input({ 'x-api-key': 'ak_live_1234567890' }), ctx, policy(apiKeys));
    expect(r).toEqual({
      kind: 'identified',
      identity: expect.objectContaining({
        subject: 'apikey:team-a/ci-bot',
        provider: 'apikey',
        method: 'apiKey',
        claims: { namespace: 'team-a', secret: 'ci-bot' },
      }),
    });
    const p = method.identify(input({ 'x-api-key': 'ak_live_partner' }), ctx, policy(apiKeys));
    expect(p.kind === 'identified' && p.identity.subject).toBe('apikey:team-a/partner');
  });

  it('rejects an unknown key, a prefix of a key, a key of another namespace and an unselected Secret', () => {
    for (const key of [
      'nope',
      'ak_live_123456789',
      'ak_live_1234567890x',
      'ak_live_other_team',
      'ak_live_unlabelled',
    ]) {
      const r = method.identify(input({ 'x-api-key': key }), ctx, policy(apiKeys));
      expect(r).toEqual({ kind: 'invalid', reason: 'unknown API key in X-API-Key' });
      // The reason never carries the key.
      expect(JSON.stringify(r)).not.toContain(key);
    }
    expect(method.identify(input({ 'x-api-key': '' }), ctx, policy(apiKeys)).kind).toBe('invalid');
  });

  it('is absent without the header, or when the policy takes no API keys', () => {
    expect(method.identify(input({}), ctx, policy(apiKeys))).toEqual({ kind: 'absent' });
    expect(method.identify(input({ 'x-api-key': 'ak_live_partner' }), ctx, policy(undefined))).toEqual({
      kind: 'absent',
    });
  });

  it('never treats every Secret as an API key when the selector is empty', () => {
    const r = method.identify(
      input({ 'x-api-key': 'ak_live_unlabelled' }),
      ctx,
      policy({ ...apiKeys, selector: {} }),
    );
    expect(r.kind).toBe('invalid');
  });

  it('stops accepting a key within seconds of its Secret being deleted, and accepts a new one', async () => {
    secret('team-a', 'temp', 'ak_live_temp');
    const accepted = () =>
      method.identify(input({ 'x-api-key': 'ak_live_temp' }), ctx, policy(apiKeys)).kind === 'identified';
    const acceptedAfter = await waitUntil('the new key accepted', accepted, 5000, { intervalMs: 10 });
    rmSync(join(root, 'team-a', 'temp'), { recursive: true });
    const refusedAfter = await waitUntil('the deleted key refused', () => !accepted(), 5000, {
      intervalMs: 10,
    });
    testLog(
      `api key: accepted ${acceptedAfter} ms after creation, refused ${refusedAfter} ms after deletion`,
    );
  });
});
