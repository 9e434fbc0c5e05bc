/**
 * Host → path → method index, built once per snapshot. A lookup walks one host bucket and
 * one path trie, never every policy, so the cost does not grow with the number of policies.
 */

export interface PathSpec {
  readonly type?: 'Prefix' | 'Exact';
  readonly value: string;
}

export interface MatchSpec {
  readonly hosts?: readonly string[];
  readonly paths?: readonly PathSpec[];
  readonly methods?: readonly string[];
}

export interface Hit<T> {
  readonly value: T;
  /** Length of the matched path (longer is more specific); 0 when the entry has no path. */
  readonly pathLength: number;
  /** Whether the host matched exactly (more specific than a wildcard or any host). */
  readonly exactHost: boolean;
  /** Whether the entry names no host at all (covers every host). */
  readonly anyHost: boolean;
}

interface Entry<T> {
  readonly value: T;
  readonly methods: ReadonlySet<string> | undefined;
  readonly pathLength: number;
  /** "/internal/" covers what is below /internal, not /internal itself. */
  readonly belowOnly: boolean;
}

class TrieNode<T> {
  readonly children = new Map<string, TrieNode<T>>();
  readonly prefix: Entry<T>[] = [];
  readonly exact: Entry<T>[] = [];
}

function segments(path: string): string[] {
  return path.split('/').filter((s) => s !== '');
}

class PathTrie<T> {
  readonly root = new TrieNode<T>();

  add(path: PathSpec | undefined, value: T, methods: ReadonlySet<string> | undefined): void {
    const raw = path?.value ?? '/';
    let node = this.root;
    for (const seg of segments(raw)) {
      let next = node.children.get(seg);
      if (!next) {
        next = new TrieNode<T>();
        node.children.set(seg, next);
      }
      node = next;
    }
    const entry: Entry<T> = {
      value,
      methods,
      pathLength: path ? raw.length : 0,
      belowOnly: raw.length > 1 && raw.endsWith('/'),
    };
    if ((path?.type ?? 'Prefix') === 'Exact') node.exact.push(entry);
    else node.prefix.push(entry);
  }

  collect(path: string, method: string, exactHost: boolean, out: Hit<T>[], anyHost = false): void {
    const segs = segments(path);
    const trailingSlash = path.length > 1 && path.endsWith('/');
    let node: TrieNode<T> | undefined = this.root;
    for (let i = 0; node; i++) {
      const below = i < segs.length || trailingSlash;
      for (const e of node.prefix) {
        if (e.belowOnly && !below) continue;
        if (!e.methods || e.methods.has(method))
          out.push({ value: e.value, pathLength: e.pathLength, exactHost, anyHost });
      }
      if (i === segs.length) {
        for (const e of node.exact) {
          if (!e.methods || e.methods.has(method))
            out.push({ value: e.value, pathLength: e.pathLength, exactHost, anyHost });
        }
        break;
      }
      node = node.children.get(segs[i]!);
    }
  }
}

export class RouteIndex<T> {
  readonly #exact = new Map<string, PathTrie<T>>();
  /** "*.example.com" is stored under ".example.com". */
  readonly #wildcard = new Map<string, PathTrie<T>>();
  readonly #anyHost = new PathTrie<T>();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  add(match: MatchSpec | undefined, value: T): void {
    this.#size++;
    // HEAD is served by GET handlers, so a route for GET covers HEAD (see withHead).
    const methods = match?.methods && match.methods.length > 0 ? new Set(match.methods) : undefined;
    if (methods?.has('GET')) methods.add('HEAD');
    const paths = match?.paths && match.paths.length > 0 ? match.paths : [undefined];
    const tries: PathTrie<T>[] = [];
    if (!match?.hosts || match.hosts.length === 0) tries.push(this.#anyHost);
    for (const h of match?.hosts ?? []) {
      const host = h.toLowerCase();
      const map = host.startsWith('*.') ? this.#wildcard : this.#exact;
      const key = host.startsWith('*.') ? host.slice(1) : host;
      let trie = map.get(key);
      if (!trie) {
        trie = new PathTrie<T>();
        map.set(key, trie);
      }
      tries.push(trie);
    }
    for (const trie of tries) for (const p of paths) trie.add(p, value, methods);
  }

  /** Every entry matching the request; host is lower-case, path normalized. */
  lookup(host: string, path: string, method: string): Hit<T>[] {
    const out: Hit<T>[] = [];
    const bare = stripPort(host);
    this.#exact.get(host)?.collect(path, method, true, out);
    if (bare !== host) this.#exact.get(bare)?.collect(path, method, true, out);
    // *.example.com matches a.example.com and a.b.example.com, not example.com.
    for (let dot = bare.indexOf('.'); dot !== -1; dot = bare.indexOf('.', dot + 1)) {
      this.#wildcard.get(bare.slice(dot))?.collect(path, method, false, out);
    }
    this.#anyHost.collect(path, method, false, out, true);
    return out;
  }
}

/** "api.example.com:8443" → "api.example.com"; "[::1]:80" → "[::1]". */
export function stripPort(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return end === -1 ? host : host.slice(0, end + 1);
  }
  const colon = host.lastIndexOf(':');
  return colon === -1 ? host : host.slice(0, colon);
}
