import { createServer, type Server } from 'node:http';
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
  /** Requests served per path since start (e.g. '/jwks'). */
  readonly hits: Map<string, number>;
  /** A JWT access token for the client (client credentials grant): sub is the client id. */
  token(clientId: string): Promise<string>;
  /** Restart on the same port signing with a new key; the old key stays published after it. */
  rotateKeys(): Promise<void>;
  /** Stop answering (connections refused) until resume(). */
  pause(): Promise<void>;
  resume(): Promise<void>;
  close(): Promise<void>;
}

async function newKey(kid: string): Promise<Record<string, unknown>> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
}

/**
 * A real OpenID provider (npm oidc-provider) on loopback, issuing RS256 JWT access tokens
 * for an API audience through the client credentials grant. It is served through a plain
 * HTTP server of ours only to count requests and to stop and restart it on its port.
 */
export async function startOidcIssuer(
  clients: readonly OidcClient[],
  audience = 'https://api.nox.test',
  opts: {
    /** The address to serve on and name in the issuer URL: loopback, or for pods of a test
     * node the host's end of the link to its network namespace. */
    host?: string;
  } = {},
): Promise<OidcIssuer> {
  const host = opts.host ?? '127.0.0.1';
  const port = await freePort();
  const issuer = `http://${host}:${port}`;
  let keys = [await newKey('key-1')];
  const byId = new Map(clients.map((c) => [c.clientId, c]));
  const hits = new Map<string, number>();
  const makeProvider = () =>
    new Provider(issuer, {
      clients: clients.map((c) => ({
        client_id: c.clientId,
        client_secret: c.secret,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
      })),
      jwks: { keys: keys as never },
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
  let provider = makeProvider();
  const listen = (): Promise<Server> =>
    new Promise((res) => {
      const s = createServer((req, resp) => {
        const path = (req.url ?? '').split('?')[0]!;
        hits.set(path, (hits.get(path) ?? 0) + 1);
        void provider.callback()(req, resp);
      });
      s.listen(port, host, () => res(s));
    });
  const close = (s: Server) =>
    new Promise<void>((res) => {
      s.closeAllConnections();
      s.close(() => res());
    });
  let server = await listen();
  return {
    issuer,
    audience,
    hits,
    async token(clientId) {
      const c = byId.get(clientId);
      if (!c) throw new Error(`unknown client ${clientId}`);
      // After a restart the client's pooled keep-alive socket is dead: retry once on a new one.
      const post = () =>
        fetch(`${issuer}/token`, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: `Basic ${Buffer.from(`${c.clientId}:${c.secret}`).toString('base64')}`,
          },
          body: 'grant_type=client_credentials&scope=api',
        });
      const res = await post().catch(() => post());
      const body = (await res.json()) as { access_token?: string; error?: string };
      if (!body.access_token) throw new Error(`token for ${clientId}: ${res.status} ${JSON.stringify(body)}`);
      return body.access_token;
    },
    async rotateKeys() {
      keys = [await newKey(`key-${keys.length + 1}`), ...keys];
      await close(server);
      provider = makeProvider();
      server = await listen();
    },
    async pause() {
      await close(server);
    },
    async resume() {
      server = await listen();
    },
    close: () => (server.listening ? close(server) : Promise.resolve()),
  };
}
