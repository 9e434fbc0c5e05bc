/**
 * Which namespace a host belongs to, so that one team's AccessPolicy cannot take another
 * team's host (by naming it, by a wildcard over it, or by a higher priority). The sidecar
 * routes by it and the operator reports it in status; both call this one function.
 *
 * - A host belongs to the namespace of the policy that claimed it first (the oldest
 *   creationTimestamp; ties by namespace/name). An exact host is also claimed by an older
 *   wildcard over it ("*.example.com" covers "api.example.com"), a wildcard by an older,
 *   broader wildcard.
 * - A claim of a host that belongs to another namespace is dropped from that policy (its
 *   other hosts still apply) and reported as a conflict.
 * - A policy that lists no hosts covers every host, so it may come only from a namespace
 *   the cluster-wide setting allows (the platform team's); from any other it is refused.
 */

export interface HostClaim {
  /** "AccessPolicy/<namespace>/<name>" */
  readonly key: string;
  readonly namespace: string;
  /** metadata.creationTimestamp in ms; undefined (a file): after every timestamped claim. */
  readonly createdAt: number | undefined;
  /** spec.match.hosts, lower-case; undefined or empty: every host. */
  readonly hosts: readonly string[] | undefined;
}

export interface HostConflict {
  readonly host: string;
  readonly ownerNamespace: string;
  /** The claim that made the host the other namespace's. */
  readonly ownerKey: string;
}

export interface OwnershipResult {
  /** Per policy key: the hosts it applies to (undefined: every host); absent: refused as a whole. */
  readonly hosts: ReadonlyMap<string, readonly string[] | undefined>;
  /** Per policy key: the hosts dropped from it. */
  readonly conflicts: ReadonlyMap<string, readonly HostConflict[]>;
  /** Policies that list no hosts, from a namespace not allowed to cover every host. */
  readonly refusedAnyHost: ReadonlySet<string>;
}

/** An AccessPolicy's claim, from its metadata (creationTimestamp as Kubernetes writes it) and spec.match.hosts. */
export function hostClaim(
  meta: { readonly namespace?: string; readonly name: string; readonly creationTimestamp?: unknown },
  hosts: readonly string[] | undefined,
): HostClaim {
  const namespace = meta.namespace ?? 'default';
  const t = meta.creationTimestamp === undefined ? Number.NaN : Date.parse(String(meta.creationTimestamp));
  return {
    key: `AccessPolicy/${namespace}/${meta.name}`,
    namespace,
    createdAt: Number.isNaN(t) ? undefined : t,
    hosts,
  };
}

/** "*" or a list of namespaces whose policies may cover every host. */
export type AnyHostNamespaces = '*' | ReadonlySet<string>;

export function parseAnyHostNamespaces(raw: string): AnyHostNamespaces {
  const list = raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return list.includes('*') ? '*' : new Set(list);
}

export function resolveHostOwnership(
  claims: readonly HostClaim[],
  anyHost: AnyHostNamespaces,
): OwnershipResult {
  const ordered = [...claims].sort(
    (a, b) =>
      (a.createdAt ?? Number.POSITIVE_INFINITY) - (b.createdAt ?? Number.POSITIVE_INFINITY) ||
      (a.key < b.key ? -1 : a.key > b.key ? 1 : 0),
  );
  const owners = new Map<string, { namespace: string; key: string }>();
  const hosts = new Map<string, readonly string[] | undefined>();
  const conflicts = new Map<string, HostConflict[]>();
  const refusedAnyHost = new Set<string>();
  for (const c of ordered) {
    if (!c.hosts || c.hosts.length === 0) {
      if (anyHost === '*' || anyHost.has(c.namespace)) hosts.set(c.key, undefined);
      else refusedAnyHost.add(c.key);
      continue;
    }
    const kept: string[] = [];
    for (const raw of c.hosts) {
      const host = raw.toLowerCase();
      const owner = coveringClaims(host)
        .map((h) => owners.get(h))
        .find((o) => o !== undefined);
      if (owner && owner.namespace !== c.namespace) {
        conflicts.set(c.key, [
          ...(conflicts.get(c.key) ?? []),
          { host, ownerNamespace: owner.namespace, ownerKey: owner.key },
        ]);
        continue;
      }
      if (!owners.has(host)) owners.set(host, { namespace: c.namespace, key: c.key });
      kept.push(host);
    }
    // A policy left with no host applies nowhere (not everywhere): it is not indexed at all.
    if (kept.length > 0) hosts.set(c.key, kept);
  }
  return { hosts, conflicts, refusedAnyHost };
}

/**
 * The host itself, then every wildcard over it, nearest first: "a.b.c" → a.b.c, *.b.c, *.c
 * ("a.b.c:8443" is also under "a.b.c"; a wildcard covers every port, as routing does).
 */
function coveringClaims(host: string): string[] {
  const colon = host.startsWith('[') ? -1 : host.lastIndexOf(':');
  const name = colon === -1 ? host : host.slice(0, colon);
  const out = colon === -1 ? [host] : [host, name];
  const labels = (name.startsWith('*.') ? name.slice(2) : name).split('.');
  for (let i = 1; i < labels.length; i++) out.push(`*.${labels.slice(i).join('.')}`);
  return out;
}
