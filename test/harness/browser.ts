interface StoredCookie {
  value: string;
  path: string;
  expiresAt: number;
}

export interface Hop {
  readonly url: string;
  readonly status: number;
  readonly location: string | undefined;
  readonly setCookies: string[];
  readonly contentType: string;
  readonly body: string;
  /** Wall time of the request, response body included. */
  readonly ms: number;
}

export const browserAccept = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

/**
 * A browser as far as cookies and redirects go: it keeps cookies per host name (not port,
 * as browsers do), honours Path and Max-Age, and follows redirects one hop at a time so a
 * test can look at each. Secure cookies are sent over http, as browsers do for loopback.
 */
export class Browser {
  readonly jar = new Map<string, Map<string, StoredCookie>>();
  /** Every hop of every request, in order. */
  readonly history: Hop[] = [];

  constructor(private readonly accept = browserAccept) {}

  cookie(host: string, name: string): string | undefined {
    const c = this.jar.get(host)?.get(name);
    return c && c.expiresAt > Date.now() ? c.value : undefined;
  }

  setCookie(host: string, name: string, value: string, path = '/'): void {
    this.#hostJar(host).set(name, { value, path, expiresAt: Number.POSITIVE_INFINITY });
  }

  /** One request, no redirect followed. */
  async request(url: string, init: { method?: string; headers?: Record<string, string> } = {}): Promise<Hop> {
    const u = new URL(url);
    const cookies = [...(this.jar.get(u.hostname) ?? new Map<string, StoredCookie>())]
      .filter(([, c]) => c.expiresAt > Date.now() && pathMatches(u.pathname, c.path))
      .sort(([, a], [, b]) => b.path.length - a.path.length)
      .map(([n, c]) => `${n}=${c.value}`);
    const started = performance.now();
    const res = await fetch(url, {
      method: init.method ?? 'GET',
      redirect: 'manual',
      headers: {
        accept: this.accept,
        ...(cookies.length ? { cookie: cookies.join('; ') } : {}),
        ...init.headers,
      },
    });
    const setCookies = res.headers.getSetCookie();
    for (const sc of setCookies) this.#store(u, sc);
    const location = res.headers.get('location') ?? undefined;
    const hop: Hop = {
      url,
      status: res.status,
      location: location === undefined ? undefined : new URL(location, url).href,
      setCookies,
      contentType: res.headers.get('content-type') ?? '',
      body: await res.text(),
      ms: performance.now() - started,
    };
    this.history.push(hop);
    return hop;
  }

  /** Follows redirects until a response that is not one; returns every hop. */
  async navigate(url: string, maxHops = 15): Promise<Hop[]> {
    const hops: Hop[] = [];
    let next: string | undefined = url;
    while (next !== undefined) {
      if (hops.length >= maxHops)
        throw new Error(`more than ${maxHops} redirects: ${hops.map((h) => h.url).join(' → ')}`);
      const hop: Hop = await this.request(next);
      hops.push(hop);
      next = hop.status >= 300 && hop.status < 400 ? hop.location : undefined;
    }
    return hops;
  }

  #hostJar(host: string): Map<string, StoredCookie> {
    let j = this.jar.get(host);
    if (!j) {
      j = new Map();
      this.jar.set(host, j);
    }
    return j;
  }

  #store(u: URL, header: string): void {
    const [pair, ...attrs] = header.split(';').map((s) => s.trim());
    const eq = pair!.indexOf('=');
    const name = pair!.slice(0, eq);
    const value = pair!.slice(eq + 1);
    let path = u.pathname.replace(/\/[^/]*$/, '') || '/';
    let expiresAt = Number.POSITIVE_INFINITY;
    for (const a of attrs) {
      const [k, v = ''] = a.split('=');
      const key = k!.toLowerCase();
      if (key === 'path') path = v;
      else if (key === 'max-age') expiresAt = Date.now() + Number(v) * 1000;
      else if (key === 'expires' && expiresAt === Number.POSITIVE_INFINITY) expiresAt = Date.parse(v);
    }
    const j = this.#hostJar(u.hostname);
    if (expiresAt <= Date.now()) j.delete(name);
    else j.set(name, { value, path, expiresAt });
  }
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}
