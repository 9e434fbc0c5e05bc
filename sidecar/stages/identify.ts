import { Counter, type Registry } from 'prom-client';
import { Busy, FanoutGuards, type FanoutLimits } from '../identity/fanout.js';
import type { IdentityMethod } from '../identity/method.js';
import type { ProfileSync } from '../identity/profileSync.js';
import type { Revocations } from '../identity/revocations.js';
import type { Ctx, Stage } from '../pipeline/stage.js';
import type { Snapshot } from '../policy/snapshot.js';
import { identityHeaders } from '../request/identityHeaders.js';
import type { CheckInput } from '../request/input.js';
import type { Deny, Outcome } from '../request/outcome.js';
import { notRouted } from './route.js';

export interface IdentifyOptions {
  readonly revocations?: Revocations;
  readonly profiles?: ProfileSync;
  /** OAuth2Provider "namespace/name" → whether it allows linking by email. */
  readonly linkByEmail?: (providerKey: string) => boolean;
  /** The bound of each dependency kind (default: defaultFanoutLimits). */
  readonly fanout?: FanoutLimits;
}

/**
 * Who is calling. The methods run in order (any-of): the first that identifies the caller
 * names it. No credential at all is anonymous (the access rules decide); a credential that
 * no method accepts is a 401, never "anonymous"; a credential that cannot be checked right
 * now is an error, and so a deny.
 */
export class IdentifyStage implements Stage {
  readonly name = 'identify';
  readonly #results: Counter<'method' | 'result'>;

  constructor(
    private readonly methods: readonly IdentityMethod[],
    registry: Registry,
    private readonly opts: IdentifyOptions = {},
  ) {
    this.#results = new Counter({
      name: 'nox_identity_results_total',
      help: 'Identification outcomes per method: identified, invalid, unavailable; and anonymous requests (method "none").',
      labelNames: ['method', 'result'],
      registers: [registry],
    });
    // One set of dependency guards for the sidecar: caps hold across methods and requests.
    const env = { guards: new FanoutGuards(registry, opts.fanout), revocations: opts.revocations };
    for (const m of methods) m.attach?.(env);
  }

  onSnapshot(s: Snapshot): void {
    for (const m of this.methods) m.onSnapshot?.(s);
  }

  async run(input: CheckInput, ctx: Ctx): Promise<Outcome> {
    const policy = ctx.accessPolicy;
    if (!policy) return notRouted('identify');
    let invalid: string | undefined;
    let unavailable: unknown;
    for (const m of this.methods) {
      const r = await m.identify(input, ctx, policy);
      if (r.kind === 'absent') continue;
      this.#results.inc({ method: m.name, result: r.kind });
      if (r.kind === 'identified') {
        if (this.opts.revocations?.isRevoked(`subject:${r.identity.subject}`, ctx.now)) {
          invalid ??= 'the caller’s access was revoked';
          continue;
        }
        if (this.opts.profiles && (r.identity.method === 'jwt' || r.identity.method === 'session')) {
          const providerKey = `${policy.key.split('/')[1]}/${r.identity.provider}`;
          this.opts.profiles.seen(r.identity, {
            providerKey,
            linkByEmail: this.opts.linkByEmail?.(providerKey) ?? false,
          });
        }
        return {
          kind: 'continue',
          identity: r.identity,
          upstreamHeaders: identityHeaders(r.identity, policy.identityHeaders),
          removeUpstreamHeaders: policy.identityHeaderNames,
        };
      }
      if (r.kind === 'invalid') invalid ??= r.reason;
      else unavailable ??= r.cause;
    }
    // A dependency at its bound was not asked: a deny of its own, which a client may retry shortly.
    if (unavailable instanceof Busy)
      return {
        kind: 'deny',
        deny: {
          code: 'IDENTITY_DEPENDENCY_BUSY',
          reason: 'the credential cannot be checked right now: too many checks in progress',
          headers: { 'retry-after': '1' },
        },
      };
    if (unavailable !== undefined)
      return { kind: 'error', code: 'IDENTITY_PROVIDER_UNAVAILABLE', cause: unavailable };
    // A credential nobody on this route accepts is refused, never read as "anonymous".
    if (invalid === undefined && input.headers.authorization !== undefined) {
      invalid = 'the Authorization header carries no credential this route accepts';
    }
    if (invalid !== undefined) {
      const deny: Deny = {
        code: 'UNAUTHENTICATED',
        reason: invalid,
        // RFC 6750 §3: say which kind of credential failed, not the details.
        headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
      };
      return { kind: 'deny', deny };
    }
    this.#results.inc({ method: 'none', result: 'anonymous' });
    return { kind: 'continue', removeUpstreamHeaders: policy.identityHeaderNames };
  }
}
