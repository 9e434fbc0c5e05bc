import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

export interface IntrospectingIssuer {
  readonly issuer: string;
  /** Requests served per path since start ('/token/introspection', '/jwks', ...). */
  readonly hits: Map<string, number>;
  /** An opaque access token for `clientId` (client credentials grant). */
  token(clientId: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * A real OpenID provider (npm oidc-provider) issuing opaque access tokens through the client
 * credentials grant, with RFC 7662 introspection (at /token/introspection, for the clients
 * given), discovery and JWKS. Served through a plain HTTP server of ours to count requests
 * where they are served.
 */
export async function startIntrospectingIssuer(
  clients: readonly { clientId: string; secret: string }[],
  audience = 'https://api.nox.test',
): Promise<IntrospectingIssuer> {
  const server: Server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({
      client_id: c.clientId,
      client_secret: c.secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    })),
    jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: 'k1', alg: 'RS256', use: 'sig' }] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: 'api', audience, accessTokenFormat: 'opaque' }),
      },
    },
    ttl: { ClientCredentials: 3600 },
  } as never);
  const hits = new Map<string, number>();
  const callback = provider.callback();
  server.on('request', (req, res) => {
    const path = (req.url ?? '').split('?')[0]!;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    void callback(req, res);
  });
  const byId = new Map(clients.map((c) => [c.clientId, c]));
  return {
    issuer,
    hits,
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
      const body = (await res.json()) as { access_token?: string };
      if (!body.access_token) throw new Error(`token for ${clientId}: ${res.status} ${JSON.stringify(body)}`);
      return body.access_token;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
