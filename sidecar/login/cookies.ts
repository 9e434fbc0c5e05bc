/** Cookie name → values, in the order the browser sent them (a name can appear more than once). */
export function parseCookies(header: string | undefined): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (!header) return out;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    const name = part.slice(0, Math.max(eq, 0)).trim();
    if (name === '') continue;
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    const list = out.get(name);
    if (list) list.push(value);
    else out.set(name, [value]);
  }
  return out;
}

/**
 * The Cookie header without the cookies `drop` names, every other pair kept as the browser
 * sent it ('' when nothing is left); undefined when it has none of them.
 */
export function withoutCookies(header: string, drop: (name: string) => boolean): string | undefined {
  let dropped = false;
  const kept = header
    .split(';')
    .map((part) => part.trim())
    .filter((part) => {
      const eq = part.indexOf('=');
      if (part === '') return false;
      if (!drop(part.slice(0, Math.max(eq, 0)).trim())) return true;
      dropped = true;
      return false;
    });
  return dropped ? kept.join('; ') : undefined;
}

/** A cookie name without the `__Host-` / `__Secure-` prefix browsers give a meaning to. */
export function cookieBase(name: string): string {
  return name.replace(/^__(Host|Secure)-/, '');
}

/**
 * The name a session cookie configured as `name` gets (RFC 6265bis §4.1.3): `__Host-` when it
 * is host-only, so a browser takes it only with Secure, Path=/ and no Domain, and neither a
 * sibling subdomain nor a plain-http page can set or shadow it; `__Secure-` with a Domain,
 * which `__Host-` forbids. A prefix the name already has is replaced by the right one.
 */
export function sessionCookieName(name: string, domain: string | undefined): string {
  return `${domain ? '__Secure-' : '__Host-'}${cookieBase(name)}`;
}

export interface CookieAttributes {
  readonly path: string;
  readonly sameSite: 'Lax' | 'Strict' | 'None';
  readonly domain?: string | undefined;
  /** Omitted: the cookie ends with the browser session. */
  readonly maxAgeS?: number;
}

const token = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const cookieValue = /^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*$/;

/**
 * A Set-Cookie value. Always HttpOnly (no script reads a session) and Secure (never sent in
 * clear text; browsers make an exception for localhost). RFC 6265 §4.1.1 grammar is checked
 * so that no request data can smuggle attributes or header breaks into the response.
 */
export function setCookie(name: string, value: string, a: CookieAttributes): string {
  if (!token.test(name) || !cookieValue.test(value) || /[;\r\n]/.test(`${a.path}${a.domain ?? ''}`))
    throw new Error(`refusing to build a cookie from an unsafe name, value, path or domain (${name})`);
  let out = `${name}=${value}; Path=${a.path}`;
  if (a.domain) out += `; Domain=${a.domain}`;
  if (a.maxAgeS !== undefined) out += `; Max-Age=${Math.max(0, Math.floor(a.maxAgeS))}`;
  return `${out}; HttpOnly; Secure; SameSite=${a.sameSite}`;
}

/** A Set-Cookie that makes the browser drop the cookie (same name, path and domain as it was set with). */
export function clearCookie(name: string, a: Omit<CookieAttributes, 'maxAgeS'>): string {
  return setCookie(name, '', { ...a, maxAgeS: 0 });
}

/**
 * A path (and query) on this site to send the browser to, or undefined. Only a local path
 * qualifies: "//evil.example" and "/\evil.example" are protocol-relative to browsers, so
 * accepting them would make the login an open redirect.
 */
export function localTarget(raw: string | null | undefined): string | undefined {
  if (!raw?.startsWith('/') || raw.startsWith('//') || raw.startsWith('/\\')) return undefined;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(raw) || raw.length > 2048) return undefined;
  return raw;
}
