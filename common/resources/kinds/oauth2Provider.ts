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
          logoutPath: normalizedPath('Path that ends the session.', 256),
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
            name: str('Cookie name.', { default: 'nox_session', pattern: '^[A-Za-z0-9_-]+$', maxLength: 64 }),
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
          rule: "!has(self.github) || self.type == 'github'",
          message: 'github only applies to type github',
          fieldPath: '.github',
          reason: 'FieldValueForbidden',
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
