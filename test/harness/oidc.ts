import type { Server } from 'node:http';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import { freePort } from './ports.js';

export interface OidcClient {
  readonly clientId: string;
  readonly secret: string;
  /** Extra claims the provider puts in this client's access tokens (e.g. a tier). */
  readonly claims?: Record<string, unknown>;
}

export interface OidcIssuer {
  readonly issuer: string;
  readonly audience: string;
  /** A JWT access token for the client (client credentials grant): sub is the client id. */
  token(clientId: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * A real OpenID provider (npm oidc-provider) on loopback, issuing RS256 JWT access tokens
 * for an API audience through the client credentials grant.
 */
export async function startOidcIssuer(
  clients: readonly OidcClient[],
  audience = 'https://api.nox.test',
): Promise<OidcIssuer> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: 'key-1', alg: 'RS256', use: 'sig' };
  const byId = new Map(clients.map((c) => [c.clientId, c]));
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({
      client_id: c.clientId,
      client_secret: c.secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    })),
    jwks: { keys: [jwk] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'api',
          audience,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    ttl: { ClientCredentials: 3600 },
    extraTokenClaims: (_ctx: unknown, token: { clientId?: string }) =>
      byId.get(token.clientId ?? '')?.claims ?? {},
  } as never);
  const server: Server = await new Promise((res) => {
    const s = provider.listen(port, '127.0.0.1', () => res(s));
  });
  return {
    issuer,
    audience,
    async token(clientId) {
      const c = byId.get(clientId);
      if (!c) throw new Error(`unknown client ${clientId}`);
      const res = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: `Basic ${Buffer.from(`${c.clientId}:${c.secret}`).toString('base64')}`,
        },
        body: 'grant_type=client_credentials&scope=api',
      });
      const body = (await res.json()) as { access_token?: string; error?: string };
      if (!body.access_token) throw new Error(`token for ${clientId}: ${res.status} ${JSON.stringify(body)}`);
      return body.access_token;
    },
    close: () =>
      new Promise((res) => {
        server.closeAllConnections();
        server.close(() => res());
      }),
  };
}
