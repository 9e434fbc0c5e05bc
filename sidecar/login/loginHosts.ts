import type { AccessPolicySpec, OAuth2ProviderSpec } from '../../common/resources/types.gen.js';
import { stripPort } from '../policy/router.js';

/**
 * The hosts a provider's browser login is bound to. A login answers its callback and logout
 * paths, and builds its redirect_uri from the request's Host, only on these hosts: on any
 * other host a client could make Nox name a host of its choosing to the provider, or take a
 * path of another tenant's site.
 *
 * - `login.hosts` when the provider lists them;
 * - otherwise the hosts of the AccessPolicies in its namespace that offer it for login, when
 *   every one of them lists hosts;
 * - otherwise (a policy covering every host, or none offering it) loopback hosts only, so
 *   that a development set-up on localhost works and nothing else does.
 */
export interface LoginHosts {
  /** Where the list came from, for logs and deny reasons. */
  readonly source: 'provider' | 'policies' | 'loopback';
  readonly exact: ReadonlySet<string>;
  /** "*.example.com" as ".example.com". */
  readonly suffixes: readonly string[];
}

const loopback: LoginHosts = {
  source: 'loopback',
  exact: new Set(['localhost', '127.0.0.1', '[::1]']),
  suffixes: [],
};

export function loginHosts(
  namespace: string,
  name: string,
  spec: OAuth2ProviderSpec,
  policies: readonly { namespace: string; spec: AccessPolicySpec }[],
): LoginHosts {
  const listed = spec.login?.hosts;
  if (listed && listed.length > 0) return hostSet('provider', listed);
  const offering = policies.filter(
    (p) => p.namespace === namespace && p.spec.login?.providers.includes(name),
  );
  if (offering.length === 0 || offering.some((p) => !p.spec.match?.hosts?.length)) return loopback;
  return hostSet(
    'policies',
    offering.flatMap((p) => p.spec.match!.hosts!),
  );
}

function hostSet(source: LoginHosts['source'], hosts: readonly string[]): LoginHosts {
  const lower = hosts.map((h) => h.toLowerCase());
  return {
    source,
    exact: new Set(lower.filter((h) => !h.startsWith('*.'))),
    suffixes: lower.filter((h) => h.startsWith('*.')).map((h) => h.slice(1)),
  };
}

/** Is `host` (lower-case, as the request's :authority, perhaps with a port) one of them? */
export function bindsHost(hosts: LoginHosts, host: string): boolean {
  if (hosts.exact.has(host)) return true;
  const bare = stripPort(host);
  if (hosts.exact.has(bare)) return true;
  return hosts.suffixes.some((s) => bare.endsWith(s) && bare.length > s.length);
}
