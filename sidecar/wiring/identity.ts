import type { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { ApiKeyMethod } from '../identity/apiKeyMethod.js';
import { ClientCertMethod } from '../identity/clientCertMethod.js';
import { GithubMethod } from '../identity/githubMethod.js';
import { JwtMethod } from '../identity/jwtMethod.js';
import type { IdentityMethod } from '../identity/method.js';
import { OpaqueTokenMethod } from '../identity/opaqueTokenMethod.js';
import type { ProfileSync } from '../identity/profileSync.js';
import type { Revocations } from '../identity/revocations.js';
import type { PolicyStore } from '../policy/store.js';
import type { SecretStore } from '../secrets/secretStore.js';
import type { Settings } from '../settings/settings.js';
import { IdentifyStage } from '../stages/identify.js';
import type { Kube } from './kube.js';
import type { Database } from './postgres.js';

export interface IdentifyParts {
  readonly kube: Kube | undefined;
  readonly secrets: SecretStore;
  readonly revocations: Revocations;
  /** The browser login's session method. */
  readonly session: IdentityMethod;
  readonly profiles: ProfileSync | undefined;
  readonly policy: PolicyStore;
}

/** The identify stage with every identity method this sidecar can use. */
export async function identifyStageFor(
  settings: Settings,
  parts: IdentifyParts,
  registry: Registry,
): Promise<IdentifyStage> {
  const { policy, profiles } = parts;
  return new IdentifyStage(await identityMethodsFor(settings, parts, registry), registry, {
    revocations: parts.revocations,
    ...(profiles ? { profiles } : {}),
    linkByEmail: (key) => policy.current?.providers.get(key)?.linkAccountsByEmail === true,
    fanout: {
      sessions: settings.fanoutSessions,
      tokenReview: settings.fanoutTokenReview,
      introspection: settings.fanoutIntrospection,
      github: settings.fanoutGithub,
    },
  });
}

/**
 * The identity methods in the order they are tried (any-of, first to identify wins):
 * credentials that are cheap to check locally first, remote checks after.
 */
async function identityMethodsFor(
  settings: Settings,
  parts: IdentifyParts,
  registry: Registry,
): Promise<IdentityMethod[]> {
  const methods: IdentityMethod[] = [
    new JwtMethod({
      cooldownMs: settings.jwksCooldownMs,
      cacheMaxAgeMs: settings.jwksMaxAgeMs,
      timeoutMs: 2000,
      revocations: parts.revocations,
      registry,
    }),
    parts.session,
    new OpaqueTokenMethod(parts.secrets),
    new GithubMethod(),
  ];
  if (parts.kube) {
    // TokenReview needs the API server; standalone sidecars have none to ask.
    const { ServiceAccountMethod } = await import('../identity/serviceAccountMethod.js');
    methods.push(new ServiceAccountMethod({ kubeConfig: parts.kube.config }));
  }
  methods.push(new ApiKeyMethod(parts.secrets), new ClientCertMethod());
  return methods;
}

/** Users and their linked accounts in PostgreSQL, as identify sees them (only with a database). */
export async function profileSyncFor(
  db: Database | undefined,
  policy: PolicyStore,
  log: Logger,
  registry: Registry,
): Promise<ProfileSync | undefined> {
  if (!db) return undefined;
  const { ProfileSync } = await import('../identity/profileSync.js');
  return new ProfileSync(db.pool, log, registry, () =>
    [...(policy.current?.providers ?? [])].filter(([, p]) => p.linkAccountsByEmail).map(([k]) => k),
  );
}
