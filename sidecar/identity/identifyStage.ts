import { createHash } from 'node:crypto';
import { decodeJwt } from 'jose';
import { Counter, type Registry } from 'prom-client';
import type { CheckInput, Ctx, Deny, Outcome, Stage } from '../pipeline/types.js';
import type { Snapshot } from '../policy/snapshot.js';
import { InvalidToken, JwtValidator, ProviderUnavailable } from './jwtValidator.js';
import { resolveProvider } from './presets.js';
import { TokenCache } from './tokenCache.js';

const bearer = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/;

/**
 * Who is calling: a bearer JWT from one of the providers the route's AccessPolicy accepts.
 * No credential means anonymous (access rules decide); a credential that does not hold up
 * is a 401, never "anonymous".
 */
export class IdentifyStage implements Stage {
  readonly name = 'identify';
  readonly #validators = new Map<string, { digest: string; validator: JwtValidator }>();
  readonly #cache = new TokenCache();
  readonly #results: Counter<'result' | 'provider'>;

  constructor(registry: Registry) {
    this.#results = new Counter({
      name: 'nox_identity_validations_total',
      help: 'Credential checks by result (cached, valid, invalid, unavailable, anonymous) and provider.',
      labelNames: ['result', 'provider'],
      registers: [registry],
    });
  }

  /** Keeps validators (and their cached keys) across snapshots while a provider is unchanged. */
  onSnapshot(s: Snapshot): void {
    for (const [key, spec] of s.providers) {
      const digest = JSON.stringify(spec);
      const cur = this.#validators.get(key);
      if (cur?.digest === digest) continue;
      if (cur) this.#cache.dropProvider(key);
      this.#validators.set(key, {
        digest,
        validator: new JwtValidator(resolveProvider(key, spec), {
          cooldownMs: 30_000,
          cacheMaxAgeMs: 600_000,
          timeoutMs: 2_000,
        }),
      });
    }
    for (const key of this.#validators.keys()) {
      if (!s.providers.has(key)) {
        this.#validators.delete(key);
        this.#cache.dropProvider(key);
      }
    }
  }

  async run(input: CheckInput, ctx: Ctx): Promise<Outcome> {
    const header = input.headers.authorization;
    if (header === undefined) {
      this.#results.inc({ result: 'anonymous', provider: '' });
      return { kind: 'skip' };
    }
    const policy = ctx.accessPolicy;
    const ns = policy ? policy.key.split('/')[1] : undefined;
    const accepted = (policy?.providers ?? [])
      .map((p) => this.#validators.get(`${ns}/${p}`)?.validator)
      .filter((v) => v !== undefined);
    const m = bearer.exec(header);
    if (!m) return unauthenticated('the Authorization header is not a Bearer token');
    const token = m[1]!;
    if (accepted.length === 0) return unauthenticated('this route accepts no token provider');
    if (token.length > Math.max(...accepted.map((v) => v.provider.maxTokenBytes)))
      return unauthenticated('the token is too large');

    const hash = createHash('sha256').update(token).digest('base64url');
    const hit = this.#cache.get(hash, ctx.now);
    if (hit && accepted.some((v) => v.provider.key === hit.providerKey)) {
      this.#results.inc({ result: 'cached', provider: hit.identity.provider });
      return { kind: 'continue', identity: hit.identity, upstreamHeaders: identityHeaders(hit.identity) };
    }
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch {
      return unauthenticated('the token is not a JWT');
    }
    // Only the provider the token names is tried: a user of one provider is never taken for another's.
    const candidates = accepted.filter((v) => {
      const expected = v.provider.issuer;
      if (!expected) return accepted.length === 1;
      if (expected.includes('{tenantid}'))
        return (
          typeof iss === 'string' &&
          new RegExp(`^${escapeRegExp(expected).replace('\\{tenantid\\}', '[0-9a-f-]+')}$`).test(iss)
        );
      return expected === iss;
    });
    if (candidates.length === 0) return unauthenticated('the token’s issuer is not accepted on this route');
    const v = candidates[0]!;
    try {
      const { identity, expiresAt } = await v.validate(token);
      this.#cache.set(hash, { identity, providerKey: v.provider.key, expiresAt });
      this.#results.inc({ result: 'valid', provider: v.provider.name });
      return { kind: 'continue', identity, upstreamHeaders: identityHeaders(identity) };
    } catch (e) {
      if (e instanceof ProviderUnavailable) {
        this.#results.inc({ result: 'unavailable', provider: v.provider.name });
        return { kind: 'error', code: 'IDENTITY_PROVIDER_UNAVAILABLE', cause: e };
      }
      this.#results.inc({ result: 'invalid', provider: v.provider.name });
      return unauthenticated(e instanceof InvalidToken ? `invalid token: ${e.message}` : 'invalid token');
    }
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function unauthenticated(reason: string): Outcome {
  const deny: Deny = {
    code: 'UNAUTHENTICATED',
    reason,
    // RFC 6750 §3: tell the client what kind of credential failed, not why in detail.
    headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
  };
  return { kind: 'deny', deny };
}

function identityHeaders(id: {
  subject: string;
  provider: string;
  email?: string;
  groups: readonly string[];
}): Record<string, string> {
  return {
    'x-nox-user': id.subject,
    'x-nox-provider': id.provider,
    ...(id.email ? { 'x-nox-email': id.email } : {}),
    ...(id.groups.length > 0 ? { 'x-nox-groups': id.groups.join(',') } : {}),
  };
}
