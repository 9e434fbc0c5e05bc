import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import { freePort } from './ports.js';

export interface LoginClient {
  readonly clientId: string;
  readonly secret: string;
  readonly redirectUris: readonly string[];
  readonly postLogoutRedirectUris?: readonly string[];
}

export interface LoginUser {
  readonly email?: string;
  readonly groups?: readonly string[];
}

export interface LoginOpOptions {
  readonly clients: readonly LoginClient[];
  /** Users by account id; the login interaction signs in `op.user`. */
  readonly users: Readonly<Record<string, LoginUser>>;
  /** Access token lifetime in seconds: short, so that tests see refreshes. */
  readonly accessTokenTtlS?: number;
}

export interface LoginOp {
  readonly issuer: string;
  /** Who the next login interaction signs in. */
  user: string;
  /**
   * The next interactions refuse consent: the provider sends the browser back to the
   * callback with error=access_denied, as when a person clicks "Cancel" at the provider.
   */
  denyConsent: boolean;
  /** A slow provider: the token endpoint (the code exchange) answers after this many ms. */
  tokenDelayMs: number;
  /** Successful token requests by grant type (authorization_code, refresh_token). */
  readonly grants: Map<string, number>;
  /** Failed token requests by error (e.g. invalid_grant). */
  readonly grantErrors: Map<string, number>;
  close(): Promise<void>;
}

/**
 * A real OpenID provider (npm oidc-provider) for the browser login: authorization code +
 * PKCE, refresh tokens rotated on every use (so a refresh race would end the grant, as
 * strict providers do), RP-initiated logout, and an interaction handler that signs in
 * `op.user` and grants consent without any HTML, so a test client can follow the redirects.
 */
export async function startLoginOp(opts: LoginOpOptions): Promise<LoginOp> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: 'login-key-1', alg: 'RS256', use: 'sig' };
  const grants = new Map<string, number>();
  const grantErrors = new Map<string, number>();
  const provider = new Provider(issuer, {
    clients: opts.clients.map((c) => ({
      client_id: c.clientId,
      client_secret: c.secret,
      redirect_uris: [...c.redirectUris],
      post_logout_redirect_uris: [...(c.postLogoutRedirectUris ?? [])],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys: [jwk] },
    cookies: { keys: ['nox-test-cookie-key'] },
    findAccount: (_ctx: unknown, id: string) => {
      const u = opts.users[id];
      if (!u) return undefined;
      return {
        accountId: id,
        claims: () => ({
          sub: id,
          email: u.email ?? `${id}@example.test`,
          email_verified: true,
          name: id,
          groups: [...(u.groups ?? [])],
        }),
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    // Scope claims in the ID token itself, which is what the session keeps.
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: false }, rpInitiatedLogout: { enabled: true } },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    issueRefreshToken: async (_ctx: unknown, client: { grantTypeAllowed(t: string): boolean }) =>
      client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    pkce: { required: () => true },
    ttl: {
      AccessToken: opts.accessTokenTtlS ?? 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 86_400,
      Interaction: 600,
      Session: 86_400,
      Grant: 86_400,
    },
  } as never);
  provider.on('grant.success', (ctx: { oidc: { params?: { grant_type?: string } } }) => {
    const t = String(ctx.oidc.params?.grant_type);
    grants.set(t, (grants.get(t) ?? 0) + 1);
  });
  provider.on('grant.error', (_ctx: unknown, err: { error?: string }) => {
    const e = String(err.error);
    grantErrors.set(e, (grantErrors.get(e) ?? 0) + 1);
  });

  const op: LoginOp = {
    issuer,
    user: Object.keys(opts.users)[0] ?? 'alice',
    denyConsent: false,
    tokenDelayMs: 0,
    grants,
    grantErrors,
    close: () =>
      new Promise((res) => {
        server.closeAllConnections();
        server.close(() => res());
      }),
  };

  const interact = async (req: IncomingMessage, res: ServerResponse) => {
    const { prompt, grantId, session, params } = await provider.interactionDetails(req, res);
    if (op.denyConsent) {
      await provider.interactionFinished(
        req,
        res,
        { error: 'access_denied', error_description: 'End-User aborted interaction' },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    if (prompt.name === 'login') {
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId: op.user } },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    const grant = grantId
      ? (await provider.Grant.find(grantId))!
      : new provider.Grant({ accountId: session!.accountId, clientId: String(params.client_id) });
    const details = prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[] };
    if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
    if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
    await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } });
  };

  const server: Server = createServer((req, res) => {
    if ((req.url ?? '').startsWith('/interaction/')) {
      interact(req, res).catch((e: unknown) => {
        res.statusCode = 500;
        res.end(String(e));
      });
      return;
    }
    if (op.tokenDelayMs > 0 && (req.url ?? '').startsWith('/token')) {
      setTimeout(() => provider.callback()(req, res), op.tokenDelayMs);
      return;
    }
    provider.callback()(req, res);
  });
  await new Promise<void>((res) => server.listen(port, '127.0.0.1', () => res()));
  return op;
}
