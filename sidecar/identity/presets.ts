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
  /** JWKS URI, or undefined to take it from discovery at `issuer`. */
  readonly jwksUri: string | undefined;
  readonly audiences: readonly string[];
  readonly algorithms: readonly string[];
  readonly clockToleranceS: number;
  readonly maxTokenBytes: number;
  readonly claims: Required<NonNullable<OAuth2ProviderSpec['claims']>>;
  readonly clientId: string;
}

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
  switch (spec.type) {
    case 'google':
      issuer ??= 'https://accounts.google.com';
      jwksUri ??= 'https://www.googleapis.com/oauth2/v3/certs';
      break;
    case 'microsoft': {
      const tenant = spec.tenant!;
      const multi = tenant === 'common' || tenant === 'organizations' || tenant === 'consumers';
      // Multi-tenant tokens carry their own tenant in "iss"; it is checked against "tid".
      issuer ??= `https://login.microsoftonline.com/${multi ? '{tenantid}' : tenant}/v2.0`;
      jwksUri ??= `https://login.microsoftonline.com/${tenant}/discovery/v2.0/keys`;
      claims = { ...claims, subject: 'oid', email: 'preferred_username', scopes: 'scp' };
      break;
    }
    case 'github':
      // GitHub's OAuth tokens are opaque; they are validated through its user API, not as JWTs.
      break;
    case 'oidc':
      break;
  }
  return {
    key,
    name,
    type: spec.type,
    issuer,
    jwksUri,
    audiences: spec.audiences && spec.audiences.length > 0 ? spec.audiences : [spec.clientId],
    algorithms: spec.allowedAlgorithms,
    clockToleranceS: seconds(spec.clockSkew),
    maxTokenBytes: spec.maxTokenBytes,
    claims: { ...claims, ...(spec.claims ?? {}) } as ResolvedProvider['claims'],
    clientId: spec.clientId,
  };
}
