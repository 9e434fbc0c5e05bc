import type { Registry } from 'prom-client';
import type { SecretStore } from '../secrets/secretStore.js';
import type { Settings } from '../settings/settings.js';
import { ApiKeyMethod } from './apiKeyMethod.js';
import { ClientCertMethod } from './clientCertMethod.js';
import { GithubMethod } from './githubMethod.js';
import { JwtMethod } from './jwtMethod.js';
import type { IdentityMethod } from './method.js';
import { OpaqueTokenMethod } from './opaqueTokenMethod.js';
import type { Revocations } from './revocations.js';

/**
 * The identity methods in the order they are tried (any-of, first to identify wins):
 * credentials that are cheap to check locally first, remote checks after.
 */
export async function identityMethodsFor(
  settings: Settings,
  secrets: SecretStore,
  revocations: Revocations,
  extra: { session?: IdentityMethod } = {},
  registry?: Registry,
): Promise<IdentityMethod[]> {
  const methods: IdentityMethod[] = [
    new JwtMethod({
      cooldownMs: settings.jwksCooldownMs,
      cacheMaxAgeMs: settings.jwksMaxAgeMs,
      timeoutMs: 2000,
      revocations,
      ...(registry ? { registry } : {}),
    }),
  ];
  if (extra.session) methods.push(extra.session);
  methods.push(new OpaqueTokenMethod(secrets), new GithubMethod());
  if (settings.configSource === 'kubernetes') {
    // TokenReview needs the API server; standalone sidecars have none to ask.
    const [{ loadKubeConfig }, { ServiceAccountMethod }] = await Promise.all([
      import('../../common/kube/config.js'),
      import('./serviceAccountMethod.js'),
    ]);
    const kubeConfig = await loadKubeConfig(settings.kubeconfig || undefined);
    methods.push(new ServiceAccountMethod({ kubeConfig }));
  }
  methods.push(new ApiKeyMethod(secrets), new ClientCertMethod());
  return methods;
}
