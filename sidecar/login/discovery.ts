import * as oidc from 'openid-client';
import type { SecretStore } from '../secrets/secretStore.js';
import type { LoginProvider } from './provider.js';

/** The provider cannot serve a login right now (discovery down, a Secret missing): fail closed, say why. */
export class LoginUnavailable extends Error {
  override readonly name = 'LoginUnavailable';
}

const loopback = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * The provider's openid-client configuration: discovery at its issuer (which must name
 * itself, OIDC Discovery §4.3), the client secret from its Secret, and the endpoint
 * overrides of the spec on top.
 */
export async function discover(p: LoginProvider, secrets: SecretStore): Promise<oidc.Configuration> {
  const issuer = p.resolved.issuer;
  if (!issuer || issuer.includes('{tenantid}'))
    throw new LoginUnavailable(
      `${p.key}: browser login needs an OpenID Connect provider with a fixed issuer`,
    );
  const ref = p.spec.clientSecretRef;
  const secret = ref ? secrets.get(p.namespace, ref.name, ref.key)?.toString('utf8').trim() : undefined;
  if (ref && !secret)
    throw new LoginUnavailable(`${p.key}: Secret ${p.namespace}/${ref.name} has no key "${ref.key}"`);
  const url = new URL(issuer);
  // Plain HTTP only to a provider on this host (tests, a local dev OP); anything else must be TLS.
  const insecure = url.protocol === 'http:' && loopback.has(url.hostname);
  const metadata: Partial<oidc.ClientMetadata> = {
    ...(secret ? { client_secret: secret } : {}),
    // RFC 8725 §3.1: ID tokens only with the provider's allow-listed algorithms.
    id_token_signed_response_alg: [...p.spec.allowedAlgorithms] as never,
    [oidc.clockTolerance]: p.resolved.clockToleranceS,
  };
  const auth = secret ? oidc.ClientSecretBasic(secret) : oidc.None();
  const execute = insecure ? [oidc.allowInsecureRequests] : [];
  const found = await oidc.discovery(url, p.spec.clientId, metadata, auth, { timeout: 5, execute });
  const ep = p.spec.endpoints ?? {};
  const overrides = Object.fromEntries(
    Object.entries({
      authorization_endpoint: ep.authorization,
      token_endpoint: ep.token,
      userinfo_endpoint: ep.userinfo,
      jwks_uri: ep.jwks,
      revocation_endpoint: ep.revocation,
      end_session_endpoint: ep.endSession,
    }).filter(([, v]) => v !== undefined),
  );
  if (Object.keys(overrides).length === 0) return found;
  const c = new oidc.Configuration(
    { ...found.serverMetadata(), ...overrides },
    p.spec.clientId,
    metadata,
    auth,
  );
  for (const f of execute) f(c);
  c.timeout = 5;
  return c;
}
