import * as oidc from 'openid-client';
import type { SecretStore } from '../secrets/secretStore.js';
import { githubConfiguration } from './github.js';
import type { LoginProvider } from './provider.js';

/** The provider cannot serve a login right now (discovery down, a Secret missing): fail closed, say why. */
export class LoginUnavailable extends Error {
  override readonly name = 'LoginUnavailable';
}

const loopback = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * Google's authorization server metadata as its discovery document publishes it
 * (https://accounts.google.com/.well-known/openid-configuration). The google preset fills
 * these endpoints, as the OAuth2Provider kind says presets do; the spec's endpoints override
 * them. Google has no end-session endpoint.
 */
const googleMetadata: oidc.ServerMetadata = {
  issuer: 'https://accounts.google.com',
  authorization_endpoint: 'https://accounts.google.com/o/oauth2/v2/auth',
  token_endpoint: 'https://oauth2.googleapis.com/token',
  userinfo_endpoint: 'https://openidconnect.googleapis.com/v1/userinfo',
  revocation_endpoint: 'https://oauth2.googleapis.com/revoke',
  jwks_uri: 'https://www.googleapis.com/oauth2/v3/certs',
  code_challenge_methods_supported: ['plain', 'S256'],
  id_token_signing_alg_values_supported: ['RS256'],
};

/** Plain HTTP only to a provider on this host (tests, a local dev OP); anything else must be TLS. */
const insecureAllowed = (url: URL) => url.protocol === 'http:' && loopback.has(url.hostname);

/**
 * The provider's openid-client configuration: discovery at its issuer (which must name
 * itself, OIDC Discovery §4.3), the client secret from its Secret, and the endpoint
 * overrides of the spec on top.
 */
export async function discover(p: LoginProvider, secrets: SecretStore): Promise<oidc.Configuration> {
  const ref = p.spec.clientSecretRef;
  const secret = ref ? secrets.get(p.namespace, ref.name, ref.key)?.toString('utf8').trim() : undefined;
  if (ref && !secret)
    throw new LoginUnavailable(`${p.key}: Secret ${p.namespace}/${ref.name} has no key "${ref.key}"`);
  if (p.spec.type === 'github') {
    if (!secret) throw new LoginUnavailable(`${p.key}: browser login with GitHub needs clientSecretRef`);
    return githubConfiguration(p, secret, insecureAllowed);
  }
  const issuer = p.resolved.issuer;
  if (!issuer || issuer.includes('{tenantid}'))
    throw new LoginUnavailable(
      `${p.key}: browser login needs an OpenID Connect provider with a fixed issuer`,
    );
  const url = new URL(issuer);
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
  ) as Record<string, string>;
  // Plain HTTP only when every plain-HTTP URL of the provider is on this host.
  const plain = [issuer, ...Object.values(overrides)]
    .map((u) => new URL(u))
    .filter((u) => u.protocol === 'http:');
  const insecure = plain.length > 0 && plain.every(insecureAllowed);
  const metadata: Partial<oidc.ClientMetadata> = {
    ...(secret ? { client_secret: secret } : {}),
    // RFC 8725 §3.1: ID tokens only with the provider's allow-listed algorithms.
    id_token_signed_response_alg: [...p.spec.allowedAlgorithms] as never,
    [oidc.clockTolerance]: p.resolved.clockToleranceS,
  };
  const auth = secret ? oidc.ClientSecretBasic(secret) : oidc.None();
  const execute = insecure ? [oidc.allowInsecureRequests] : [];
  // The google preset fills Google's endpoints itself (no discovery round trip); any other
  // provider is discovered at its issuer.
  const found =
    p.spec.type === 'google' && !p.spec.issuer
      ? new oidc.Configuration(googleMetadata, p.spec.clientId, metadata, auth)
      : await oidc.discovery(url, p.spec.clientId, metadata, auth, { timeout: 5, execute });
  if (Object.keys(overrides).length === 0 && p.spec.type !== 'google') return found;
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
