import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, type Hop } from '../harness/browser.js';
import { type Envoy, startEnvoy } from '../harness/envoy.js';
import { type LoginOp, startLoginOp } from '../harness/oidcLogin.js';
import { writeSecret } from '../harness/policies.js';
import { freePorts } from '../harness/ports.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { scrapedMetric } from '../harness/registry.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { type TrainedModel, trainModel } from '../harness/trainer.js';
import { startUpstream, type Upstream } from '../harness/upstream.js';

/**
 * A RiskModel's challenge to a browser signed in through Nox's login, through real Envoy and
 * a real OpenID provider (oidc-provider): the browser is sent back to the provider to log in
 * again (prompt=login, max_age, acr_values), returns to its page, and the fresh auth_time of
 * its new ID token passes the challenge, until it is older than the RiskModel's maxAge.
 */
const FEATURES = ['subjectRate1m', 'writeMethod', 'pathNovelty'];
const MAX_AGE_S = 3;

const policy = (issuer: string, model: TrainedModel) => `
apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: corp }
spec:
  type: oidc
  issuer: ${issuer}
  clientId: web
  clientSecretRef: { name: corp-oidc, key: client-secret }
  scopes: [openid, email, profile, groups]
  login:
    enabled: true
    callbackPath: /oauth2/callback
    sessionTTL: 1h
    cookie: { name: nox_session, sameSite: Lax }
    encryptionKeySecretRef: { name: corp-session, key: session-key }
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: app }
spec:
  match: { paths: [{ type: Prefix, value: /app }] }
  providers: [corp]
  login: { providers: [corp] }
  rules: [{ name: staff, action: Allow, when: { groups: [staff] } }]
  defaultAction: Deny
---
apiVersion: nox.dev/v1alpha1
kind: RiskModel
metadata: { name: app-risk }
spec:
  match: { paths: [{ type: Prefix, value: /app }] }
  model: { path: ${model.path}, sha256: "${model.sha256}" }
  features: [${FEATURES.join(', ')}]
  # Every request is at the challenge threshold: only a fresh authentication passes.
  thresholds: { challenge: 0, deny: 0.999, block: 0.9999 }
  stepUp: { maxAge: ${MAX_AGE_S}s }
`;

describe('risk step-up for a browser', () => {
  let op: LoginOp;
  let upstream: Upstream;
  let sidecar: Sidecar;
  let envoy: Envoy;

  beforeAll(async () => {
    const [port] = await freePorts(1);
    const origin = `http://127.0.0.1:${port}`;
    op = await startLoginOp({
      clients: [{ clientId: 'web', secret: 'web-secret', redirectUris: [`${origin}/oauth2/callback`] }],
      users: { alice: { groups: ['staff'] } },
    });
    const model = await trainModel({
      features: FEATURES,
      rows: Array.from({ length: 500 }, (_, i) => [1 + (i % 20), i % 5 === 0 ? 1 : 0, i % 17 === 0 ? 1 : 0]),
    });
    const secretsDir = scratchDir('step-up-secrets');
    writeSecret(secretsDir, 'default', 'corp-oidc', { 'client-secret': 'web-secret' });
    writeSecret(secretsDir, 'default', 'corp-session', { 'session-key': randomBytes(32).toString('base64') });
    const policyPath = join(scratchDir('step-up-policy'), 'policy.yaml');
    writeFileSync(policyPath, policy(op.issuer, model));
    upstream = await startUpstream();
    sidecar = await startSidecar({
      policyPath,
      env: { NOX_SECRETS_DIR: secretsDir, NOX_CHECK_DEADLINE_MS: '2500' },
    });
    await waitUntil(
      'the risk model loaded',
      async () =>
        (await scrapedMetric(sidecar.httpPort, 'nox_risk_model_loads_total', { result: 'loaded' })) >= 1,
      30_000,
    );
    envoy = await startEnvoy({
      authzPort: sidecar.grpcPort,
      upstreamPort: upstream.port,
      listenPort: port!,
      authzTimeoutMs: 3000,
    });
  }, 120_000);

  afterAll(async () => {
    await envoy?.stop();
    await sidecar?.stop();
    await upstream?.close();
    await op?.close();
  });

  /** The authorization requests among the hops, as URLs. */
  const authorizations = (hops: readonly Hop[]) =>
    hops
      .filter((h) => h.status === 302 && h.location?.startsWith(`${op.issuer}/auth`))
      .map((h) => new URL(h.location!));

  it('sends the browser to log in again, and lets it in while the authentication is fresh', async () => {
    op.user = 'alice';
    const browser = new Browser();
    // The first login asks for no max_age, so its ID token need not say when the user
    // authenticated: the challenge sends the browser back once more, this time asking for it.
    const first = await browser.navigate(`${envoy.url}/app/page?x=1`);
    expect(first.at(-1)!.status, first.map((h) => `${h.status} ${h.url}`).join('\n')).toBe(200);
    const asked = authorizations(first);
    expect(asked).toHaveLength(2);
    expect(asked[0]!.searchParams.get('prompt')).toBeNull();
    expect(asked[1]!.searchParams.get('prompt')).toBe('login');
    expect(asked[1]!.searchParams.get('max_age')).toBe(String(MAX_AGE_S));
    expect(first.at(-1)!.url).toBe(`${envoy.url}/app/page?x=1`);
    const authenticatedAt = Date.now();

    // Fresh: the next page passes at once.
    const again = await browser.navigate(`${envoy.url}/app/other`);
    expect(again.map((h) => h.status)).toEqual([200]);
    expect(await scrapedMetric(sidecar.httpPort, 'nox_risk_step_ups_total')).toBeGreaterThanOrEqual(2);

    // Older than maxAge: sent to log in again, then back to the page.
    await waitUntil(
      'the authentication older than maxAge',
      () => Date.now() > authenticatedAt + MAX_AGE_S * 1000 + 1000,
      10_000,
      {
        intervalMs: 100,
      },
    );
    const later = await browser.navigate(`${envoy.url}/app/later`);
    expect(later.at(-1)!.status).toBe(200);
    expect(later.at(-1)!.url).toBe(`${envoy.url}/app/later`);
    expect(authorizations(later).map((u) => u.searchParams.get('prompt'))).toEqual(['login']);
  });
});
