import type * as oidc from 'openid-client';
import type { Logger } from '../../common/logger.js';
import type { AccessPolicySpec, OAuth2ProviderSpec } from '../../common/resources/types.gen.js';
import { resolveProvider } from '../identity/presets.js';
import type { CookieScope } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Snapshot } from '../policy/snapshot.js';
import type { SecretStore } from '../secrets/secretStore.js';
import { cookieBase, sessionCookieName } from './cookies.js';
import { discover, LoginUnavailable } from './discovery.js';
import { bindsHost, loginHosts } from './loginHosts.js';
import type { LoginProvider } from './provider.js';
import { KeyError, Keyring, parseKeys } from './seal.js';

export type { LoginProvider };
export { LoginUnavailable };

interface Index {
  readonly byKey: ReadonlyMap<string, LoginProvider>;
  /** Callback and logout paths → the providers using them. */
  readonly callbacks: ReadonlyMap<string, LoginProvider[]>;
  readonly logouts: ReadonlyMap<string, LoginProvider[]>;
  /**
   * The session cookie names of every login provider without their prefix (cookieBase): these,
   * with any prefix, and their pre-login cookies never reach an upstream.
   */
  readonly cookieNames: ReadonlySet<string>;
  readonly offered: Map<string, LoginProvider[]>;
  readonly accepting: Map<string, LoginProvider[]>;
}

interface ProviderState {
  digest: string;
  keyring?: Keyring;
  config?: oidc.Configuration;
  discovering?: Promise<oidc.Configuration>;
  retryAt: number;
  backoffMs: number;
}

export function durationMs(d: string): number {
  let total = 0;
  for (const [, n, unit] of d.matchAll(/([0-9]+)(ms|s|m|h|d|w)/g))
    total += Number(n) * { ms: 1, s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7, w: 6.048e8 }[unit as 'ms'];
  return total;
}

/**
 * The login-enabled providers of a snapshot, indexed by path, and what each needs at run
 * time: its keyring (from its Secret) and its openid-client configuration (from discovery,
 * retried with backoff, never on every request). Indexes are derived from the snapshot a
 * check runs against, so they can never disagree with it.
 */
export class LoginProviders {
  readonly #indexes = new WeakMap<Snapshot, Index>();
  readonly #state = new Map<string, ProviderState>();

  constructor(
    private readonly secrets: SecretStore,
    private readonly log: Logger,
  ) {
    // A rotated key or client secret takes effect at once; discovery itself is kept.
    secrets.onChange(() => {
      for (const st of this.#state.values()) {
        st.keyring = undefined;
        st.config = undefined;
      }
    });
  }

  index(s: Snapshot): Index {
    let idx = this.#indexes.get(s);
    if (idx) return idx;
    const byKey = new Map<string, LoginProvider>();
    const policies = [...s.accepted.values()]
      .filter((r) => r.kind === 'AccessPolicy')
      .map((r) => ({
        namespace: (r.object.metadata as { namespace?: string }).namespace ?? 'default',
        spec: r.object.spec as AccessPolicySpec,
      }));
    const callbacks = new Map<string, LoginProvider[]>();
    const logouts = new Map<string, LoginProvider[]>();
    for (const [key, spec] of s.providers) {
      const login = spec.login;
      if (!login?.enabled || !login.callbackPath) continue;
      const [namespace, name] = key.split('/') as [string, string];
      const p: LoginProvider = {
        key,
        namespace,
        spec,
        resolved: resolveProvider(key, spec),
        callbackPath: login.callbackPath,
        logoutPath: login.logoutPath,
        postLogoutRedirect: login.postLogoutRedirect,
        sessionTtlMs: durationMs(login.sessionTTL),
        refreshBeforeMs: durationMs(login.refreshBefore),
        cookie: sessionCookie(login.cookie),
        hosts: loginHosts(namespace, name, spec, policies),
      };
      byKey.set(key, p);
      callbacks.set(p.callbackPath, [...(callbacks.get(p.callbackPath) ?? []), p]);
      if (p.logoutPath) logouts.set(p.logoutPath, [...(logouts.get(p.logoutPath) ?? []), p]);
    }
    const cookieNames = new Set([...byKey.values()].map((p) => cookieBase(p.cookie.name)));
    idx = { byKey, callbacks, logouts, cookieNames, offered: new Map(), accepting: new Map() };
    this.#indexes.set(s, idx);
    return idx;
  }

  /**
   * On a new snapshot: discovery starts and keys are read now, so the first browser does not
   * wait for them and a missing Secret is in the log before anyone tries to log in.
   */
  warm(s: Snapshot): void {
    const idx = this.index(s);
    for (const key of this.#state.keys()) if (!idx.byKey.has(key)) this.#state.delete(key);
    for (const p of idx.byKey.values()) {
      void this.config(p).catch(() => undefined); // logged by config()
      try {
        this.keyring(p);
      } catch (e) {
        this.log.error({ provider: p.key, err: String(e) }, 'browser login cannot work for this provider');
      }
    }
  }

  /** Is this a login callback path on a host that provider's login is bound to (login.ts answers it)? */
  isCallback(s: Snapshot, host: string, path: string): boolean {
    return (
      this.index(s)
        .callbacks.get(path)
        ?.some((p) => bindsHost(p.hosts, host)) ?? false
    );
  }

  /** The providers a policy offers unauthenticated browsers (`spec.login.providers`). */
  offered(s: Snapshot, policy: CompiledAccessPolicy): LoginProvider[] {
    const idx = this.index(s);
    let list = idx.offered.get(policy.key);
    if (!list) {
      const spec = s.accepted.get(policy.key)?.object.spec as AccessPolicySpec | undefined;
      const ns = policy.key.split('/')[1] ?? 'default';
      list = (spec?.login?.providers ?? [])
        .map((n) => idx.byKey.get(`${ns}/${n}`))
        .filter((p) => p !== undefined);
      idx.offered.set(policy.key, list);
    }
    return list;
  }

  /** Providers whose sessions identify callers on a policy's routes: its providers and the ones it offers for login. */
  accepting(s: Snapshot, policy: CompiledAccessPolicy): LoginProvider[] {
    const idx = this.index(s);
    let list = idx.accepting.get(policy.key);
    if (!list) {
      const ns = policy.key.split('/')[1] ?? 'default';
      const named = policy.providers.map((n) => idx.byKey.get(`${ns}/${n}`)).filter((p) => p !== undefined);
      list = [...new Set([...named, ...this.offered(s, policy)])];
      idx.accepting.set(policy.key, list);
    }
    return list;
  }

  keyring(p: LoginProvider): Keyring {
    const st = this.#stateOf(p);
    if (st.keyring) return st.keyring;
    const ref = p.spec.login?.encryptionKeySecretRef;
    if (!ref) throw new LoginUnavailable(`${p.key}: login.encryptionKeySecretRef is not set`);
    const raw = this.secrets.get(p.namespace, ref.name, ref.key);
    if (!raw)
      throw new LoginUnavailable(`${p.key}: Secret ${p.namespace}/${ref.name} has no key "${ref.key}"`);
    try {
      st.keyring = new Keyring(parseKeys(raw));
    } catch (e) {
      if (e instanceof KeyError) throw new LoginUnavailable(`${p.key}: session key: ${e.message}`);
      throw e;
    }
    return st.keyring;
  }

  /** The provider's openid-client configuration; LoginUnavailable while discovery fails. */
  async config(p: LoginProvider): Promise<oidc.Configuration> {
    const st = this.#stateOf(p);
    if (st.config) return st.config;
    if (!st.discovering) {
      if (Date.now() < st.retryAt)
        throw new LoginUnavailable(
          `${p.key}: discovery failed recently; next attempt in ${st.retryAt - Date.now()} ms`,
        );
      st.discovering = discover(p, this.secrets).then(
        (c) => {
          st.config = c;
          st.backoffMs = 500;
          st.discovering = undefined;
          return c;
        },
        (e: unknown) => {
          st.discovering = undefined;
          st.retryAt = Date.now() + st.backoffMs;
          st.backoffMs = Math.min(st.backoffMs * 2, 30_000);
          this.log.warn({ provider: p.key, err: String(e) }, 'login discovery failed');
          throw e instanceof LoginUnavailable ? e : new LoginUnavailable(`${p.key}: discovery: ${String(e)}`);
        },
      );
    }
    return st.discovering;
  }

  #stateOf(p: LoginProvider): ProviderState {
    const digest = JSON.stringify(p.spec);
    let st = this.#state.get(p.key);
    if (!st || st.digest !== digest) {
      st = { digest, retryAt: 0, backoffMs: 500 };
      this.#state.set(p.key, st);
    }
    return st;
  }
}

/** The session cookie as configured (defaults: nox_session, Lax), with the name browsers get. */
function sessionCookie(c: NonNullable<OAuth2ProviderSpec['login']>['cookie']): CookieScope {
  const name = c?.name ?? 'nox_session';
  return {
    name: sessionCookieName(name, c?.domain || undefined),
    ...(c?.domain ? { domain: c.domain } : {}),
    sameSite: c?.sameSite ?? 'Lax',
  };
}
