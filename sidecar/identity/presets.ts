import type { OAuth2ProviderSpec } from '../../common/resources/types.gen.js';

/** What the identify stage needs to validate a provider's bearer JWTs. */
export interface ResolvedProvider {
  /** "namespace/name" */
  readonly key: string;
  /** The provider name users see in subjects: "<name>:<sub>". */
  readonly name: string;
  readonly type: OAuth2ProviderSpec['type'];
  /** Expected "iss"; for multi-tenant Entra ("organizations", "common") a template with {tenantid}. */
  readonly issuer: string | undefined;
  /** Every "iss" a token may carry, when the provider writes its issuer more than one way (Google). */
  readonly issuerSpellings: readonly string[] | undefined;
  /** JWKS URI, or undefined to take it from discovery at `issuer`. */
  readonly jwksUri: string | undefined;
  readonly audiences: readonly string[];
  readonly algorithms: readonly string[];
  readonly clockToleranceS: number;
  readonly maxTokenBytes: number;
  readonly claims: Required<NonNullable<OAuth2ProviderSpec['claims']>>;
  readonly clientId: string;
  /**
   * Which bearer JWTs are access tokens (OAuth2Provider accessTokenType): AtJwt (RFC 9068
   * typ at+jwt only), NotIdToken (anything but a recognisable ID token) or Any.
   */
  readonly accessTokenType: AccessTokenType;
  /** For an issuer template ({tenantid}): the only tenants ("tid") accepted; empty accepts none. */
  readonly allowedTenants: ReadonlySet<string> | undefined;
}

export type AccessTokenType = NonNullable<OAuth2ProviderSpec['accessTokenType']>;

/** Personal Microsoft accounts: the tenant of every token from the "consumers" endpoints. */
export const MSA_TENANT = '9188040d-6c67-4c5b-b112-36a304b66dad';

const defaultClaims = {
  subject: 'sub',
  email: 'email',
  emailVerified: 'email_verified',
  name: 'name',
  picture: 'picture',
  groups: 'groups',
  roles: 'roles',
  scopes: 'scope',
};

function seconds(d: string): number {
  let total = 0;
  for (const [, n, unit] of d.matchAll(/([0-9]+)(ms|s|m|h|d|w)/g)) {
    const mult = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[unit as 'ms'];
    total += Number(n) * mult;
  }
  return total;
}

/** Preset endpoints and claim names per provider type; anything in the spec overrides them. */
export function resolveProvider(key: string, spec: OAuth2ProviderSpec): ResolvedProvider {
  const name = key.split('/').at(-1)!;
  let issuer = spec.issuer;
  let jwksUri = spec.endpoints?.jwks;
  let claims = { ...defaultClaims };
  // The default per preset: where the provider's access tokens cannot be told from its ID
  // tokens by typ, refuse what is recognisably an ID token (see accessTokenType in the kind).
  let accessTokenType: AccessTokenType = 'NotIdToken';
  let issuerSpellings: string[] | undefined;
  switch (spec.type) {
    case 'google':
      // Google signs ID tokens with iss "https://accounts.google.com" or "accounts.google.com"
      // (developers.google.com/identity/openid-connect: "Validating an ID token"); both are it.
      if (!spec.issuer) issuerSpellings = ['https://accounts.google.com', 'accounts.google.com'];
      issuer ??= 'https://accounts.google.com';
      jwksUri ??= 'https://www.googleapis.com/oauth2/v3/certs';
      // Google's access tokens are opaque: every Google-signed JWT is an ID token, and an ID
      // token with the service's audience is how Google's own services authenticate calls.
      accessTokenType = 'Any';
      break;
    case 'microsoft': {
      const tenant = spec.tenant!.toLowerCase();
      const multi = tenant === 'common' || tenant === 'organizations';
      // Multi-tenant tokens carry their own tenant in "iss"; it is checked against "tid" and
      // microsoft.allowedTenants. "consumers" tokens all come from one tenant, the MSA one.
      issuer ??= `https://login.microsoftonline.com/${multi ? '{tenantid}' : tenant === 'consumers' ? MSA_TENANT : spec.tenant}/v2.0`;
      jwksUri ??= `https://login.microsoftonline.com/${spec.tenant}/discovery/v2.0/keys`;
      claims = { ...claims, subject: 'oid', email: 'preferred_username', scopes: 'scp' };
      break;
    }
    case 'github':
      // GitHub's OAuth tokens are opaque; they are validated through its user API, not as JWTs.
      break;
    case 'oidc':
      break;
  }
  if (spec.accessTokenType) accessTokenType = spec.accessTokenType;
  return {
    key,
    name,
    type: spec.type,
    issuer,
    issuerSpellings,
    jwksUri,
    audiences: spec.audiences && spec.audiences.length > 0 ? spec.audiences : [spec.clientId],
    algorithms: spec.allowedAlgorithms,
    clockToleranceS: seconds(spec.clockSkew),
    maxTokenBytes: spec.maxTokenBytes,
    claims: { ...claims, ...(spec.claims ?? {}) } as ResolvedProvider['claims'],
    clientId: spec.clientId,
    accessTokenType,
    // A template issuer with no list accepts no tenant (the CRD requires one; fail closed).
    allowedTenants: issuer?.includes('{tenantid}')
      ? new Set(spec.microsoft?.allowedTenants ?? [])
      : undefined,
  };
}
