import { ageColumn, type KindDefinition, readyColumn, reasonColumn } from '../kind.js';
import {
  bool,
  boundedDuration,
  celString,
  conditions,
  duration,
  enumOf,
  int,
  normalizedPath,
  obj,
  patterns,
  secretKeyRef,
  set,
  str,
} from '../schema.js';

// RFC 8725 §3.1-3.2: asymmetric algorithms only; "none" and HS* (which a public key could be
// abused to verify) cannot even be written down.
const algorithms = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const;

/** Entra ID's multi-tenant endpoints ("common", "organizations"), in any case (their URLs are case-insensitive). */
const multiTenant = `^(${['common', 'organizations']
  .map((t) => [...t].map((c) => `[${c}${c.toUpperCase()}]`).join(''))
  .join('|')})$`;

/** An endpoint of the provider, in a shape Node's URL parser reads as written. */
const url = (description: string) =>
  str(
    `${description} http(s)://host[:port][/path]: a DNS name, an IPv4 address or [::1]; printable ASCII, no fragment.`,
    { pattern: patterns.url, maxLength: 2048 },
  );

export const oauth2Provider: KindDefinition = {
  kind: 'OAuth2Provider',
  plural: 'oauth2providers',
  singular: 'oauth2provider',
  shortNames: ['oap'],
  role: 'policy',
  description: 'An OAuth2 / OpenID Connect identity provider the Nox sidecar accepts tokens and logins from.',
  spec: obj(
    'The provider, its client registration, and how its tokens and claims are read.',
    {
      type: enumOf(
        'Preset: google, github, microsoft (Entra ID, tenant-aware) or oidc (any issuer, by discovery). Presets fill endpoints and claim names; every field below overrides them.',
        ['google', 'github', 'microsoft', 'oidc'],
      ),
      displayName: str(
        'What people see for this provider on the login chooser page (Sign in with <displayName>): plain text, no control characters or surrounding spaces. Absent: the name of the preset (Google, GitHub, Microsoft), else the host of the issuer; never the resource name.',
        {
          minLength: 1,
          maxLength: 64,
          pattern: '^[^\\s\\x00-\\x1f\\x7f]([^\\x00-\\x1f\\x7f]*[^\\s\\x00-\\x1f\\x7f])?$',
        },
      ),
      issuer: url(
        'Issuer URL (required for oidc). Discovery reads <issuer>/.well-known/openid-configuration. With login.enabled it must be https (plain http only to 127.0.0.1, localhost or [::1]).',
      ),
      tenant: str(
        'Entra ID tenant id or domain (microsoft): letters, digits, "." and "-"; "organizations" or "common" accept any tenant.',
        { maxLength: 128, pattern: '^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$' },
      ),
      clientId: str('OAuth2 client id.', { minLength: 1, maxLength: 512 }),
      clientSecretRef: secretKeyRef(
        'Client secret, for the login flow and token introspection.',
        'client-secret',
      ),
      scopes: set(
        'Scopes requested at login; at least one. Each is an RFC 6749 scope token: printable ASCII without space, " and \\.',
        str('Scope.', { maxLength: 256, pattern: '^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$' }),
        {
          default: ['openid', 'email', 'profile'],
          maxItems: 32,
          minItems: 1,
        },
      ),
      audiences: set(
        'Accepted "aud" values of bearer JWTs; empty means the clientId.',
        str('Audience.', { maxLength: 512 }),
        { maxItems: 16 },
      ),
      allowedAlgorithms: set('JWS algorithms accepted.', enumOf('Algorithm.', algorithms), {
        default: ['RS256', 'ES256'],
        minItems: 1,
        maxItems: 10,
      }),
      clockSkew: boundedDuration(
        'Tolerance on exp, nbf and iat.',
        { name: 'clockSkew', max: '5m' },
        { default: '60s' },
      ),
      maxTokenBytes: int('Longer bearer tokens are rejected before any parsing.', {
        minimum: 512,
        maximum: 65536,
        default: 8192,
      }),
      endpoints: obj('Endpoint overrides; normally from the preset or discovery.', {
        authorization: url('Authorization endpoint.'),
        token: url('Token endpoint.'),
        userinfo: url('UserInfo endpoint (or the user API, for github).'),
        jwks: url('JWKS URI.'),
        introspection: url('RFC 7662 introspection endpoint, for opaque tokens.'),
        revocation: url('RFC 7009 revocation endpoint.'),
        endSession: url('RP-initiated logout endpoint.'),
      }),
      claims: obj('Claim names Nox reads identity from.', {
        subject: str('Subject.', { default: 'sub', maxLength: 128 }),
        email: str('Email.', { default: 'email', maxLength: 128 }),
        emailVerified: str('Email verified flag.', { default: 'email_verified', maxLength: 128 }),
        name: str('Display name.', { default: 'name', maxLength: 128 }),
        picture: str('Avatar URL.', { default: 'picture', maxLength: 128 }),
        groups: str('Groups.', { default: 'groups', maxLength: 128 }),
        roles: str('Roles.', { default: 'roles', maxLength: 128 }),
        scopes: str('Scopes (space-separated string or list).', { default: 'scope', maxLength: 128 }),
      }),
      login: obj(
        'Browser login (authorization code + PKCE) with sessions shared by all sidecars.',
        {
          enabled: bool('Redirect unauthenticated browsers to the provider.', { default: false }),
          callbackPath: normalizedPath('Path the provider redirects back to; unique per provider.', 256),
          logoutPath: normalizedPath(
            "Path that ends the session: by a POST from this site (Origin or Sec-Fetch-Site same-origin, or the token of the confirmation page a browser gets for a GET); another site's POST is refused LOGOUT_REFUSED.",
            256,
          ),
          hosts: set(
            'Hosts (":authority", lower-case, exact or "*." wildcard) browsers log in on: the callback and logout paths are answered there only, and the redirect_uri names the request\'s host only when it is one of them. Absent: the hosts of the AccessPolicies in this namespace that offer this provider; when one of those covers every host, or none offers it, only loopback hosts (localhost, 127.0.0.1, [::1]), for development.',
            str('Host.', { pattern: patterns.hostname }),
            { maxItems: 32, minItems: 1 },
          ),
          postLogoutRedirect: str('Where the browser goes after logout (http or https URL).', {
            pattern: patterns.httpUrl,
            maxLength: 2048,
          }),
          sessionTTL: duration('Session lifetime.', { default: '12h' }),
          refreshBefore: duration('Refresh access tokens this long before they expire.', { default: '60s' }),
          cookie: obj('Session cookie.', {
            name: str(
              'Cookie name; browsers get it prefixed "__Host-" (host-only: Secure, Path=/, no Domain, so no other host or plain-http page can set or shadow it) or "__Secure-" when a domain is set.',
              { default: 'nox_session', pattern: '^[A-Za-z0-9_-]+$', maxLength: 64 },
            ),
            domain: str(
              'Cookie domain: a lower-case DNS name, optionally with a leading "."; empty or absent is host-only.',
              {
                maxLength: 253,
                pattern: `^$|^\\.?${patterns.dnsSubdomain.slice(1)}`,
              },
            ),
            sameSite: enumOf('SameSite.', ['Lax', 'Strict', 'None'], { default: 'Lax' }),
          }),
          encryptionKeySecretRef: secretKeyRef(
            '32-byte key that encrypts tokens in the session store (AES-256-GCM).',
            'session-key',
          ),
        },
        {
          rules: [
            {
              rule: '!self.enabled || (has(self.callbackPath) && has(self.encryptionKeySecretRef))',
              message: 'login.enabled needs callbackPath and encryptionKeySecretRef',
              reason: 'FieldValueRequired',
            },
          ],
        },
      ),
      github: obj(
        'github only: require membership of one of the organizations or teams listed (at least one; an empty list would let any GitHub user in).',
        {
          organizations: set(
            'The user must belong to one of these organizations; at least one when present.',
            str('Organization.', { maxLength: 64, pattern: '^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$' }),
            { maxItems: 16, minItems: 1 },
          ),
          teams: set(
            'Or to one of these teams, as org/team-slug; at least one when present.',
            str('Team.', { pattern: '^[A-Za-z0-9-]+/[A-Za-z0-9_.-]+$', maxLength: 128 }),
            { maxItems: 32, minItems: 1 },
          ),
        },
        {
          rules: [
            {
              rule: 'has(self.organizations) || has(self.teams)',
              message:
                'github needs organizations or teams; without either any GitHub user would be accepted',
              reason: 'FieldValueRequired',
            },
          ],
        },
      ),
      linkAccountsByEmail: bool(
        'Link this provider’s users to users of other providers with the same verified email. Never done silently.',
        {
          default: false,
        },
      ),
      accessTokenType: enumOf(
        'Which bearer JWTs count as access tokens; a token refused here is a 401 "an ID token is not an access token". AtJwt: only RFC 9068 access tokens, header typ "at+jwt" or "application/at+jwt" (RFC 9068 §4); set it when the issuer issues them: oidc-provider with resource indicators and JWT access tokens, Auth0 APIs with the RFC 9068 token profile, Keycloak clients set to the "at+jwt" access token header type, Duende IdentityServer. NotIdToken: any JWT but an ID token, told apart by what ID tokens carry: an explicit typ other than JWT or at+jwt (e.g. id_token+jwt, logout+jwt), a nonce, at_hash, c_hash or s_hash claim, Keycloak\'s typ claim "ID"; for microsoft, neither azp nor appid (Entra ID access tokens always name their client there; its ID tokens never do); for oidc, an aud that is the clientId alone with no scope, scp or client_id claim (Okta ID tokens; set Any for an issuer whose access tokens look like that). Any: ID tokens too. Default by type: google Any (Google issues no JWT access tokens; its ID tokens are how its services call each other), microsoft and oidc NotIdToken (Entra ID and most issuers type both kinds "JWT" or not at all). Not for github.',
        ['AtJwt', 'NotIdToken', 'Any'],
      ),
      microsoft: obj(
        'microsoft only: with tenant common or organizations, which tenants are accepted.',
        {
          allowedTenants: set(
            "Entra ID tenant ids (lower-case GUIDs) whose tokens are accepted; at least one. A token's tid must be one of them and its iss https://login.microsoftonline.com/<tid>/v2.0 (the issuer template of the multi-tenant discovery document). Personal Microsoft accounts (tenant common) are tenant 9188040d-6c67-4c5b-b112-36a304b66dad.",
            str('Tenant id.', {
              pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
              maxLength: 36,
            }),
            { minItems: 1, maxItems: 64 },
          ),
        },
        { required: ['allowedTenants'] },
      ),
    },
    {
      required: ['type', 'clientId'],
      rules: [
        {
          rule: "self.type != 'oidc' || has(self.issuer)",
          message: 'issuer is required when type is oidc',
          fieldPath: '.issuer',
          reason: 'FieldValueRequired',
        },
        {
          // sidecar/login/discovery.ts: discovery over plain HTTP only to a provider on this host.
          rule: `!has(self.login) || !self.login.enabled || !has(self.issuer) || self.issuer.matches(${celString(patterns.secureUrlPrefix)})`,
          message:
            'issuer must be https:// for browser login (plain http only to 127.0.0.1, localhost or [::1])',
          fieldPath: '.issuer',
        },
        {
          rule: "self.type != 'microsoft' || has(self.tenant)",
          message: 'tenant is required when type is microsoft',
          fieldPath: '.tenant',
          reason: 'FieldValueRequired',
        },
        {
          rule: "!has(self.tenant) || self.type == 'microsoft'",
          message: 'tenant only applies to type microsoft',
          fieldPath: '.tenant',
          reason: 'FieldValueForbidden',
        },
        {
          // Any tenant would do otherwise: Entra ID signs every tenant's tokens with the same keys.
          rule: `self.type != 'microsoft' || !has(self.tenant) || !self.tenant.matches('${multiTenant}') || has(self.microsoft)`,
          message:
            'tenant common or organizations needs microsoft.allowedTenants: without it a token of any Entra ID tenant would be accepted',
          fieldPath: '.microsoft',
          reason: 'FieldValueRequired',
        },
        {
          rule: `!has(self.microsoft) || (self.type == 'microsoft' && has(self.tenant) && self.tenant.matches('${multiTenant}'))`,
          message:
            'microsoft.allowedTenants only applies to type microsoft with tenant common or organizations (a single tenant accepts its own only)',
          fieldPath: '.microsoft',
          reason: 'FieldValueForbidden',
        },
        {
          rule: "!has(self.accessTokenType) || self.type != 'github'",
          message: 'accessTokenType does not apply to github, whose tokens are opaque',
          fieldPath: '.accessTokenType',
          reason: 'FieldValueForbidden',
        },
        {
          rule: "!has(self.github) || self.type == 'github'",
          message: 'github only applies to type github',
          fieldPath: '.github',
          reason: 'FieldValueForbidden',
        },
        {
          // GitHub's token endpoint takes no public clients (no PKCE-only login).
          rule: "self.type != 'github' || !has(self.login) || !self.login.enabled || has(self.clientSecretRef)",
          message: "browser login with github needs clientSecretRef (the OAuth app's client secret)",
          fieldPath: '.clientSecretRef',
          reason: 'FieldValueRequired',
        },
      ],
    },
  ),
  status: obj('Observed state.', {
    observedGeneration: int('Generation the status describes.', { minimum: 0 }),
    issuer: str('Issuer in use (from preset, spec or discovery).', { maxLength: 2048 }),
    jwksKeys: int('Signing keys currently cached.', { minimum: 0 }),
    conditions,
  }),
  printerColumns: [
    { name: 'Type', type: 'string', jsonPath: '.spec.type' },
    { name: 'Issuer', type: 'string', jsonPath: '.status.issuer', priority: 1 },
    { name: 'Login', type: 'boolean', jsonPath: '.spec.login.enabled' },
    readyColumn,
    reasonColumn,
    ageColumn,
  ],
};
