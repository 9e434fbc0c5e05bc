import { describe, expect, it } from 'vitest';
import type { AccessPolicySpec, OAuth2ProviderSpec } from '../../common/resources/types.gen.js';
import { bindsHost, loginHosts } from './loginHosts.js';

const provider = (hosts?: string[]) =>
  ({
    type: 'oidc',
    login: {
      enabled: true,
      callbackPath: '/cb',
      sessionTTL: '1h',
      refreshBefore: '60s',
      ...(hosts ? { hosts } : {}),
    },
  }) as unknown as OAuth2ProviderSpec;
const policy = (namespace: string, providers: string[], hosts?: string[]) => ({
  namespace,
  spec: { login: { providers }, ...(hosts ? { match: { hosts } } : {}) } as unknown as AccessPolicySpec,
});

describe('loginHosts', () => {
  it('binds to the hosts the provider lists, exact (with or without a port) or by wildcard', () => {
    const h = loginHosts('web', 'corp', provider(['app.example.com', '*.corp.example']), []);
    expect(h.source).toBe('provider');
    for (const ok of ['app.example.com', 'app.example.com:8443', 'a.corp.example', 'a.b.corp.example:443'])
      expect(bindsHost(h, ok), ok).toBe(true);
    for (const no of [
      'evil.example',
      'corp.example',
      'app.example.com.evil.example',
      'localhost',
      '127.0.0.1:8080',
    ])
      expect(bindsHost(h, no), no).toBe(false);
  });

  it('otherwise binds to the hosts of the policies in its namespace that offer it', () => {
    const h = loginHosts('web', 'corp', provider(), [
      policy('web', ['corp'], ['app.example.com']),
      policy('web', ['other'], ['other.example.com']),
      policy('tenant-b', ['corp'], ['b.example.com']),
    ]);
    expect(h.source).toBe('policies');
    expect(bindsHost(h, 'app.example.com')).toBe(true);
    expect(bindsHost(h, 'other.example.com')).toBe(false);
    expect(bindsHost(h, 'b.example.com')).toBe(false);
  });

  it('falls back to loopback hosts when an offering policy covers every host, or none offers it', () => {
    for (const h of [
      loginHosts('web', 'corp', provider(), [
        policy('web', ['corp'], ['app.example.com']),
        policy('web', ['corp']),
      ]),
      loginHosts('web', 'corp', provider(), []),
    ]) {
      expect(h.source).toBe('loopback');
      for (const ok of ['localhost', 'localhost:3000', '127.0.0.1:8080', '[::1]:8443'])
        expect(bindsHost(h, ok), ok).toBe(true);
      for (const no of ['app.example.com', 'evil.example', '127.0.0.2'])
        expect(bindsHost(h, no), no).toBe(false);
    }
  });
});
