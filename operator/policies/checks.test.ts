import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type {
  AccessPolicy,
  OAuth2Provider,
  QuotaPolicy,
  RiskModel,
} from '../../common/resources/types.gen.js';
import {
  type ConfigMapSummary,
  evaluatePolicy,
  keyringProblem,
  type PolicyWorld,
  type SecretSummary,
  summarizeConfigMap,
  summarizeSecret,
} from './checks.js';

const ns = 'team-a';
const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64');

function world(
  objs: { providers?: OAuth2Provider[]; secrets?: object[]; configMaps?: object[] } = {},
): PolicyWorld {
  const secrets = new Map<string, SecretSummary>(
    (objs.secrets ?? []).map((s) => {
      const sum = summarizeSecret(s as never);
      return [sum.metadata.name, sum];
    }),
  );
  const cms = new Map<string, ConfigMapSummary>(
    (objs.configMaps ?? []).map((c) => {
      const sum = summarizeConfigMap(c as never);
      return [sum.metadata.name, sum];
    }),
  );
  return {
    provider: (n, name) => (n === ns ? objs.providers?.find((p) => p.metadata.name === name) : undefined),
    secret: (n, name) => (n === ns ? secrets.get(name) : undefined),
    configMap: (n, name) => (n === ns ? cms.get(name) : undefined),
  };
}

const secret = (name: string, data: Record<string, Buffer | string>) => ({
  apiVersion: 'v1',
  kind: 'Secret',
  metadata: { name, namespace: ns },
  data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])),
});

function provider(name: string, spec: Partial<OAuth2Provider['spec']> = {}): OAuth2Provider {
  return {
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'OAuth2Provider',
    metadata: { name, namespace: ns, generation: 1 },
    spec: {
      type: 'oidc',
      issuer: 'https://sso.example.com',
      clientId: 'nox',
      scopes: ['openid'],
      allowedAlgorithms: ['RS256'],
      clockSkew: '30s',
      maxTokenBytes: 8192,
      linkAccountsByEmail: false,
      ...spec,
    },
  };
}

function accessPolicy(spec: Partial<AccessPolicy['spec']>): AccessPolicy {
  return {
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'AccessPolicy',
    metadata: { name: 'api', namespace: ns, generation: 1 },
    spec: {
      mode: 'Enforce',
      pathCase: 'Unknown',
      audit: { record: 'All', allowSampleRate: 0.01 },
      identityHeaders: {
        user: 'x-nox-user',
        provider: 'x-nox-provider',
        email: 'x-nox-email',
        groups: 'x-nox-groups',
      },
      defaultAction: 'Deny',
      priority: 0,
      ...spec,
    },
  };
}

function riskModel(model: RiskModel['spec']['model']): RiskModel {
  return {
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'RiskModel',
    metadata: { name: 'risk', namespace: ns, generation: 1 },
    spec: {
      mode: 'DryRun',
      failureMode: 'Open',
      model,
      features: ['hourOfDay'],
      thresholds: { challenge: 0.5, deny: 0.8, block: 0.9 },
      blockDuration: '15m',
    },
  };
}

const quota: QuotaPolicy = {
  apiVersion: 'nox.dev/v1alpha1',
  kind: 'QuotaPolicy',
  metadata: { name: 'q', namespace: ns, generation: 1 },
  spec: {
    mode: 'Enforce',
    failureMode: 'Closed',
    subject: [{ type: 'User' }],
    tiers: [{ name: 'free', limits: [{ requests: 100, window: '1h' }] }],
    defaultTier: 'free',
    timeZone: 'UTC',
  },
};

describe('evaluatePolicy', () => {
  it('accepts a valid QuotaPolicy and makes it Ready', () => {
    const e = evaluatePolicy(quota, world());
    expect(e.accepted).toMatchObject({ status: 'True', reason: 'Valid' });
    expect(e.ready).toMatchObject({ status: 'True', reason: 'Ready' });
  });

  it('refuses an invalid spec with the field and rule', () => {
    const bad = {
      ...quota,
      spec: { ...quota.spec, tiers: [{ name: 'free', limits: [{ requests: -1, window: '1h' }] }] },
    };
    const e = evaluatePolicy(bad, world());
    expect(e.accepted).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    expect(e.accepted.message).toContain('spec.tiers[0].limits[0].requests');
    expect(e.ready).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
  });

  describe('OAuth2Provider', () => {
    const p = provider('sso', { clientSecretRef: { name: 'sso-client', key: 'secret' } });

    it('SecretNotFound when the client secret Secret is missing', () => {
      const e = evaluatePolicy(p, world());
      expect(e.ready).toMatchObject({ status: 'False', reason: 'SecretNotFound' });
      expect(e.ready.message).toContain(`Secret ${ns}/sso-client does not exist`);
    });

    it('SecretKeyNotFound names the keys the Secret has (never values)', () => {
      const e = evaluatePolicy(p, world({ secrets: [secret('sso-client', { other: 'hunter2' })] }));
      expect(e.ready).toMatchObject({ status: 'False', reason: 'SecretKeyNotFound' });
      expect(e.ready.message).toContain('"other"');
      expect(e.ready.message).not.toContain('hunter2');
    });

    it('SecretKeyNotFound for an empty value', () => {
      const e = evaluatePolicy(p, world({ secrets: [secret('sso-client', { secret: '' })] }));
      expect(e.ready).toMatchObject({ status: 'False', reason: 'SecretKeyNotFound' });
      expect(e.ready.message).toContain('is empty');
    });

    it('Ready when the Secret and key exist', () => {
      const e = evaluatePolicy(p, world({ secrets: [secret('sso-client', { secret: 's3cret' })] }));
      expect(e.ready).toMatchObject({ status: 'True', reason: 'Ready' });
    });

    it('checks the session key of a login provider', () => {
      const login = provider('sso', {
        login: {
          enabled: true,
          callbackPath: '/cb',
          sessionTTL: '8h',
          refreshBefore: '1m',
          encryptionKeySecretRef: { name: 'session', key: 'key' },
        },
      });
      expect(evaluatePolicy(login, world()).ready.reason).toBe('SecretNotFound');
      const short = evaluatePolicy(login, world({ secrets: [secret('session', { key: 'too-short' })] }));
      expect(short.ready).toMatchObject({ status: 'False', reason: 'InvalidEncryptionKey' });
      const ok = evaluatePolicy(
        login,
        world({ secrets: [secret('session', { key: randomBytes(32).toString('base64') })] }),
      );
      expect(ok.ready).toMatchObject({ status: 'True' });
    });
  });

  describe('AccessPolicy', () => {
    it('ProviderNotFound for a provider that does not exist, in providers or login.providers', () => {
      const e = evaluatePolicy(accessPolicy({ providers: ['missing'] }), world());
      expect(e.ready).toMatchObject({ status: 'False', reason: 'ProviderNotFound' });
      expect(e.ready.message).toContain(`spec.providers: OAuth2Provider ${ns}/missing does not exist`);
      const l = evaluatePolicy(accessPolicy({ login: { providers: ['gone'] } }), world());
      expect(l.ready.message).toContain('spec.login.providers');
    });

    it('ProviderNotReady quotes the provider’s own problem', () => {
      const p = provider('sso', { clientSecretRef: { name: 'sso-client', key: 'secret' } });
      const e = evaluatePolicy(accessPolicy({ providers: ['sso'] }), world({ providers: [p] }));
      expect(e.ready).toMatchObject({ status: 'False', reason: 'ProviderNotReady' });
      expect(e.ready.message).toContain('SecretNotFound');
    });

    it('ProviderLoginDisabled when login offers a provider without login', () => {
      const e = evaluatePolicy(
        accessPolicy({ login: { providers: ['sso'] } }),
        world({ providers: [provider('sso')] }),
      );
      expect(e.ready).toMatchObject({ status: 'False', reason: 'ProviderLoginDisabled' });
    });

    it('lists every problem, the first reason wins', () => {
      const e = evaluatePolicy(
        accessPolicy({ providers: ['a', 'b'] }),
        world({ providers: [provider('a', { clientSecretRef: { name: 'x', key: 'y' } })] }),
      );
      expect(e.ready.reason).toBe('ProviderNotFound');
      expect(e.ready.message).toContain('/b does not exist');
      expect(e.ready.message).toContain('/a is not usable');
    });

    it('Ready when every provider exists and is usable', () => {
      const e = evaluatePolicy(accessPolicy({ providers: ['sso'] }), world({ providers: [provider('sso')] }));
      expect(e.ready).toMatchObject({ status: 'True', reason: 'Ready' });
    });
  });

  describe('RiskModel', () => {
    const bytes = randomBytes(1000);
    const digest = createHash('sha256').update(bytes).digest('hex');
    const cm = (data: object) => ({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'model', namespace: ns, labels: { 'nox.dev/risk-model': 'true' } },
      ...data,
    });
    const rm = riskModel({ configMapRef: { name: 'model', key: 'model.onnx' }, sha256: digest });

    it('ConfigMapNotFound', () => {
      expect(evaluatePolicy(rm, world()).ready.reason).toBe('ConfigMapNotFound');
    });

    it('ConfigMapKeyNotFound, with a hint when the key is under data', () => {
      const e = evaluatePolicy(rm, world({ configMaps: [cm({ data: { 'model.onnx': 'text' } })] }));
      expect(e.ready.reason).toBe('ConfigMapKeyNotFound');
      expect(e.ready.message).toContain('under data, not binaryData');
    });

    it('ModelDigestMismatch names both digests', () => {
      const other = randomBytes(10);
      const e = evaluatePolicy(rm, world({ configMaps: [cm({ binaryData: { 'model.onnx': b64(other) } })] }));
      expect(e.ready.reason).toBe('ModelDigestMismatch');
      expect(e.ready.message).toContain(digest);
      expect(e.ready.message).toContain(createHash('sha256').update(other).digest('hex'));
    });

    it('Ready when the digest matches', () => {
      const e = evaluatePolicy(rm, world({ configMaps: [cm({ binaryData: { 'model.onnx': b64(bytes) } })] }));
      expect(e.ready).toMatchObject({ status: 'True', reason: 'Ready' });
    });

    it('ConfigMapNotLabelled: the sidecars would not see it', () => {
      const unlabelled = {
        ...cm({ binaryData: { 'model.onnx': b64(bytes) } }),
        metadata: { name: 'model', namespace: ns },
      };
      const e = evaluatePolicy(rm, world({ configMaps: [unlabelled] }));
      expect(e.ready.reason).toBe('ConfigMapNotLabelled');
      expect(e.ready.message).toContain('nox.dev/risk-model=true');
    });

    it('without spec.model.sha256, the digest the publisher annotated: Ready, ModelDigestMismatch, ModelDigestMissing', () => {
      const published = (sha256?: string) =>
        world({
          configMaps: [
            {
              ...cm({ binaryData: { 'model.onnx': b64(bytes) } }),
              metadata: {
                name: 'model',
                namespace: ns,
                labels: { 'nox.dev/risk-model': 'true' },
                ...(sha256 ? { annotations: { 'nox.dev/sha256': sha256 } } : {}),
              },
            },
          ],
        });
      const unpinned = riskModel({ configMapRef: { name: 'model', key: 'model.onnx' } });
      expect(evaluatePolicy(unpinned, published(digest.toUpperCase())).ready).toMatchObject({
        status: 'True',
        reason: 'Ready',
      });
      const wrong = createHash('sha256').update('other').digest('hex');
      const e = evaluatePolicy(unpinned, published(wrong));
      expect(e.ready.reason).toBe('ModelDigestMismatch');
      expect(e.ready.message).toContain(`the nox.dev/sha256 annotation says ${wrong}`);
      expect(evaluatePolicy(unpinned, published()).ready.reason).toBe('ModelDigestMissing');
      // The spec's digest pins the model, whatever the annotation says.
      expect(
        evaluatePolicy(
          riskModel({ configMapRef: { name: 'model', key: 'model.onnx' }, sha256: digest }),
          published(wrong),
        ).ready.status,
      ).toBe('True');
    });

    it('a model on the sidecars’ filesystem cannot be checked here and is Ready', () => {
      const e = evaluatePolicy(riskModel({ path: '/models/m.onnx', sha256: digest }), world());
      expect(e.ready.status).toBe('True');
      expect(e.ready.message).toContain('/models/m.onnx');
    });
  });
});

describe('AccessPolicy hosts', () => {
  it('is HostsRequired without hosts outside the namespaces allowed to cover every host, Ready inside them', () => {
    const everyHost = accessPolicy({});
    const restricted = { ...world(), anyHostNamespaces: () => new Set(['platform']) };
    const e = evaluatePolicy(everyHost, restricted);
    expect(e.ready).toMatchObject({ status: 'False', reason: 'HostsRequired' });
    expect(e.ready.message).toContain('only the namespaces platform may do');
    expect(
      evaluatePolicy(everyHost, { ...world(), anyHostNamespaces: () => new Set([ns]) }).ready.status,
    ).toBe('True');
    expect(evaluatePolicy(everyHost, world()).ready.status).toBe('True'); // "*" by default
    expect(evaluatePolicy(accessPolicy({ match: { hosts: ['a.example'] } }), restricted).ready.status).toBe(
      'True',
    );
  });
});

describe('keyringProblem (the format of sidecar/login/seal.ts parseKeys)', () => {
  it('accepts 32 raw bytes, hex and base64 keys, several separated by whitespace or commas', () => {
    const k = randomBytes(32);
    expect(keyringProblem(k)).toBeNull();
    expect(keyringProblem(Buffer.from(k.toString('hex')))).toBeNull();
    expect(
      keyringProblem(Buffer.from(`${k.toString('base64')}, ${randomBytes(32).toString('hex')}\n`)),
    ).toBeNull();
  });
  it('refuses short keys and empty values', () => {
    expect(keyringProblem(Buffer.from('abc'))).toMatch(/bytes; AES-256 needs 32/);
    expect(keyringProblem(Buffer.from('  \n'))).toBe('the value holds no key');
  });
});

describe('summaries keep no values', () => {
  it('a Secret summary holds key names and sizes only', () => {
    const s = summarizeSecret(secret('x', { password: 'hunter2' }) as never);
    expect(JSON.stringify(s)).not.toContain(b64('hunter2'));
    expect(s.keys.password?.bytes).toBe(7);
  });
});
