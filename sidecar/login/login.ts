import * as oidc from 'openid-client';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import type { SessionEvent } from '../audit/decisionAudit.js';
import type { SecretStore } from '../secrets/secretStore.js';
import { Pages } from './pages.js';
import { LoginProviders, LoginUnavailable } from './providers.js';
import type { SessionStore } from './sessionStore.js';

/**
 * What the login stage, its response phase and the session method share: the providers,
 * the session store, the pages and metrics.
 */
export class Login {
  readonly providers: LoginProviders;
  #onEvent: ((e: SessionEvent) => void) | undefined;
  readonly logins: Counter<'provider' | 'result'>;
  readonly refreshes: Counter<'result'>;
  readonly revocations: Counter<'reason'>;

  constructor(
    readonly store: SessionStore,
    secrets: SecretStore,
    readonly log: Logger,
    registry: Registry,
    /** The pages a browser sees from Nox (chooser, errors), with the operator's title, logo and default page. */
    readonly pages: Pages = new Pages(),
  ) {
    this.providers = new LoginProviders(secrets, log);
    this.logins = new Counter({
      name: 'nox_logins_total',
      help: 'Browser logins completed at the callback path, by provider and result: success, failed (bad state, cookie or code), unavailable (provider or store down).',
      labelNames: ['provider', 'result'],
      registers: [registry],
    });
    this.refreshes = new Counter({
      name: 'nox_session_refreshes_total',
      help: 'Session token refreshes: refreshed; current (another request or sidecar had just refreshed); ended (the provider refused the refresh token: session over); error (transient: the session stands, retried later).',
      labelNames: ['result'],
      registers: [registry],
    });
    new Gauge({
      name: 'nox_sessions_active',
      help: 'Browser sessions not yet expired or revoked, in the shared store (read at scrape time).',
      registers: [registry],
      async collect() {
        try {
          this.set(await store.active());
        } catch {
          // Store unreachable: leave the last value; the store's own errors are counted elsewhere.
        }
      },
    });
    this.revocations = new Counter({
      name: 'nox_session_revocations_total',
      help: 'Sessions ended before their time, by reason: logout, provider (refresh refused), api.',
      labelNames: ['reason'],
      registers: [registry],
    });
  }

  /** Where session events go (the audit log's session events); one listener. */
  onSessionEvent(listener: (e: SessionEvent) => void): void {
    this.#onEvent = listener;
  }

  sessionEvent(e: SessionEvent): void {
    this.#onEvent?.(e);
  }

  /** Ends a session on every sidecar (the store broadcasts it); `hash` is `sessionHash(id)`. */
  async revoke(hash: string, reason: 'logout' | 'provider' | 'api'): Promise<boolean> {
    const existed = await this.store.revoke(hash);
    this.revocations.inc({ reason });
    return existed;
  }
}

/** How a call to the provider failed: it could not be reached (retry later), or it said no. */
export function providerFailure(e: unknown): 'unavailable' | 'rejected' {
  if (e instanceof LoginUnavailable) return 'unavailable';
  if (e instanceof oidc.ResponseBodyError) return e.status >= 500 ? 'unavailable' : 'rejected';
  if (e instanceof TypeError && /fetch failed|network/i.test(e.message)) return 'unavailable'; // refused, reset, DNS
  if (e instanceof oidc.ClientError) {
    const transient = [
      'OAUTH_TIMEOUT',
      'OAUTH_ABORT',
      'OAUTH_RESPONSE_IS_NOT_CONFORM',
      'OAUTH_RESPONSE_IS_NOT_JSON',
    ];
    return transient.includes(e.code ?? '') ? 'unavailable' : 'rejected';
  }
  return 'rejected';
}

export function describeError(e: unknown): string {
  if (e instanceof oidc.AuthorizationResponseError) return `the provider answered ${e.error}`;
  if (e instanceof oidc.ResponseBodyError) return `the token endpoint answered ${e.error}`;
  return e instanceof Error ? e.message : String(e);
}
