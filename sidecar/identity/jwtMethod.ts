import { createHash } from 'node:crypto';
import { decodeJwt } from 'jose';
import { Counter, type Registry } from 'prom-client';
import type { Ctx } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Snapshot } from '../policy/snapshot.js';
import type { CheckInput } from '../request/input.js';
import { InvalidToken, JwtValidator, ProviderUnavailable } from './jwtValidator.js';
import { type IdentityMethod, type MethodResult, policyNamespace } from './method.js';
import { resolveProvider } from './presets.js';
import type { Revocations } from './revocations.js';
import { TokenCache } from './tokenCache.js';

const bearer = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/;

/** The bearer token of a request, or undefined; a malformed Authorization header is ''. */
export function bearerToken(input: CheckInput): string | undefined {
  const header = input.headers.authorization;
  if (header === undefined) return undefined;
  return bearer.exec(header)?.[1] ?? '';
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Bearer JWTs from the route's OAuth2Providers, validated against their JWKS, cached until expiry. */
export class JwtMethod implements IdentityMethod {
  readonly name = 'jwt';

  constructor(
    private readonly opts: {
      cooldownMs: number;
      cacheMaxAgeMs: number;
      timeoutMs: number;
      revocations?: Revocations;
      registry?: Registry;
    } = {
      cooldownMs: 30_000,
      cacheMaxAgeMs: 600_000,
      timeoutMs: 2_000,
    },
  ) {
    const registers = opts.registry ? [opts.registry] : [];
    this.#cacheResults = new Counter({
      name: 'nox_identity_token_cache_total',
      help: 'Bearer JWT lookups in the verified-token cache: hit or miss (hit ratio = hit / all).',
      labelNames: ['result'],
      registers,
    });
    this.#jwksFetches = new Counter({
      name: 'nox_identity_jwks_fetches_total',
      help: 'JWKS fetches per provider (first fetch, unknown key id past the cooldown, max age).',
      labelNames: ['provider'],
      registers,
    });
  }

  readonly #cacheResults: Counter<'result'>;
  readonly #jwksFetches: Counter<'provider'>;
  readonly #validators = new Map<string, { digest: string; validator: JwtValidator }>();
  readonly #cache = new TokenCache();

  onSnapshot(s: Snapshot): void {
    for (const [key, spec] of s.providers) {
      const digest = JSON.stringify(spec);
      const cur = this.#validators.get(key);
      if (cur?.digest === digest) continue;
      if (cur) this.#cache.dropProvider(key);
      this.#validators.set(key, {
        digest,
        validator: new JwtValidator(resolveProvider(key, spec), {
          ...this.opts,
          onFetch: (provider) => this.#jwksFetches.inc({ provider }),
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

  /** Forget a token everywhere in this process (revocation). */
  revoke(tokenHash: string): void {
    this.#cache.delete(tokenHash);
  }

  async identify(input: CheckInput, ctx: Ctx, policy: CompiledAccessPolicy): Promise<MethodResult> {
    const token = bearerToken(input);
    if (token === undefined) return { kind: 'absent' };
    if (token === '') return { kind: 'invalid', reason: 'the Authorization header is not a Bearer token' };
    const ns = policyNamespace(policy);
    const accepted = policy.providers
      .map((p) => this.#validators.get(`${ns}/${p}`)?.validator)
      .filter((v) => v !== undefined && v.provider.type !== 'github');
    if (accepted.length === 0) return { kind: 'absent' };
    if (token.length > Math.max(...accepted.map((v) => v!.provider.maxTokenBytes)))
      return { kind: 'invalid', reason: 'the token is too large' };
    const hash = createHash('sha256').update(token).digest('base64url');
    if (this.opts.revocations?.isRevoked(`token:${hash}`, ctx.now))
      return { kind: 'invalid', reason: 'the token was revoked' };
    const hit = this.#cache.get(hash, ctx.now);
    if (hit && accepted.some((v) => v!.provider.key === hit.providerKey)) {
      this.#cacheResults.inc({ result: 'hit' });
      return { kind: 'identified', identity: hit.identity };
    }
    this.#cacheResults.inc({ result: 'miss' });
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch {
      return { kind: 'absent' }; // not a JWT: an opaque token or a ServiceAccount token may still fit
    }
    // Only the provider the token names is tried: a user of one provider is never taken for another's.
    const v = accepted.find((c) => {
      const expected = c!.provider.issuer;
      if (!expected) return accepted.length === 1;
      if (expected.includes('{tenantid}')) {
        return (
          typeof iss === 'string' &&
          new RegExp(`^${escapeRegExp(expected).replace('\\{tenantid\\}', '[0-9a-f-]+')}$`).test(iss)
        );
      }
      return c!.provider.issuerSpellings?.includes(iss as string) ?? expected === iss;
    });
    if (!v) return { kind: 'absent' };
    try {
      const { identity, expiresAt } = await v.validate(token);
      this.#cache.set(hash, { identity, providerKey: v.provider.key, expiresAt });
      return { kind: 'identified', identity };
    } catch (e) {
      if (e instanceof ProviderUnavailable) return { kind: 'unavailable', cause: e };
      return {
        kind: 'invalid',
        reason: e instanceof InvalidToken ? `invalid token: ${e.message}` : 'invalid token',
      };
    }
  }
}
