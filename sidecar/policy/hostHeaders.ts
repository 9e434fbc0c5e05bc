/**
 * Host → the identity header names of every AccessPolicy whose hosts cover that host, built
 * once per snapshot. Whichever policy routes a request, a client's copy of any of these names
 * is removed, so a header one policy on the host trusts is never forged through another.
 *
 * Hosts are compared without port and trailing dot, on both sides: a policy for
 * "app.example.com" also counts for "app.example.com:8443" and "app.example.com.". That can
 * only remove more headers than the router's match would, never fewer.
 */
export class HostHeaderNames {
  readonly #exact = new Map<string, readonly string[]>();
  /** "*.example.com" is stored under ".example.com"; each list includes the shorter suffixes' names. */
  readonly #wildcard = new Map<string, readonly string[]>();
  readonly #anyHost: readonly string[];

  /** `policies`: each AccessPolicy's hosts (none: every host) and its lower-case identity header names. */
  constructor(
    policies: Iterable<{ readonly hosts?: readonly string[] | undefined; readonly names: readonly string[] }>,
  ) {
    const exact = new Map<string, Set<string>>();
    const wildcard = new Map<string, Set<string>>();
    const anyHost = new Set<string>();
    const add = (map: Map<string, Set<string>>, key: string, names: readonly string[]) => {
      const set = map.get(key) ?? new Set<string>();
      map.set(key, set);
      for (const n of names) set.add(n);
    };
    for (const p of policies) {
      if (!p.hosts || p.hosts.length === 0) for (const n of p.names) anyHost.add(n);
      for (const h of p.hosts ?? []) {
        const host = normalizeHost(h);
        if (host.startsWith('*.')) add(wildcard, host.slice(1), p.names);
        else add(exact, host, p.names);
      }
    }
    // Each list is complete, so a lookup is one hit: wildcards covering a host, then any-host.
    const covering = (host: string, out: Set<string>) => {
      for (let dot = host.indexOf('.'); dot !== -1; dot = host.indexOf('.', dot + 1)) {
        for (const n of wildcard.get(host.slice(dot)) ?? []) out.add(n);
      }
      for (const n of anyHost) out.add(n);
      return Object.freeze([...out].sort());
    };
    for (const [host, names] of exact) this.#exact.set(host, covering(host, new Set(names)));
    // ".example.com" is covered by "*.com" as "x.example.com" would be: walk from the second dot.
    for (const [suffix, names] of wildcard) {
      this.#wildcard.set(suffix, covering(suffix.slice(1), new Set(names)));
    }
    this.#anyHost = Object.freeze([...anyHost].sort());
  }

  /** The names to remove on a request for `host` (as Envoy sent it: lower-case, maybe a port). */
  forHost(host: string): readonly string[] {
    const bare = normalizeHost(host);
    const exact = this.#exact.get(bare);
    if (exact) return exact;
    // Longest suffix first: its list already holds the shorter ones'.
    for (let dot = bare.indexOf('.'); dot !== -1; dot = bare.indexOf('.', dot + 1)) {
      const names = this.#wildcard.get(bare.slice(dot));
      if (names) return names;
    }
    return this.#anyHost;
  }
}

/** Lower-case, without port and trailing dots: "App.Example.com.:8443" → "app.example.com". */
export function normalizeHost(host: string): string {
  let h = host.toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end === -1 ? h : h.slice(0, end + 1);
  }
  const colon = h.lastIndexOf(':');
  if (colon !== -1) h = h.slice(0, colon);
  while (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}
