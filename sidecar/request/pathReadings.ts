/**
 * The ways real upstreams may read one (already normalized) request path. Envoy has merged
 * slashes and resolved dot segments before Nox and the upstream see the path, but servers
 * still differ after that:
 *
 * - Path parameters: Tomcat, Jetty and Spring drop `;name=value` from every segment, then
 *   resolve dot segments again, so `/admin;x=1/users` is `/admin/users` and
 *   `/public/..;/admin` is `/admin`; Node's http and Go's net/http keep the `;` in the name.
 * - Trailing slash: many frameworks (Spring before 6, Express by default, Rails) serve
 *   `/admin/` as `/admin`; others tell them apart.
 * - Case: a case-insensitive upstream (IIS, a Windows file share, some routers configured
 *   so) serves `/ADMIN/users` as `/admin/users`.
 *
 * The first reading is the path as sent; the rest are the distinct other readings. A request
 * is allowed only if every reading is (see the route and access stages), so a policy decides
 * the same whichever kind of server is behind it.
 */
export function pathReadings(path: string, caseSensitive: boolean): string[] {
  const readings = [path];
  const add = (p: string) => {
    if (!readings.includes(p)) readings.push(p);
  };
  if (path.includes(';')) for (const p of [...readings]) add(withoutParameters(p));
  if (path.length > 1)
    for (const p of [...readings]) if (p.length > 1 && p.endsWith('/')) add(p.slice(0, -1));
  if (!caseSensitive && /[A-Z]/.test(path)) for (const p of [...readings]) add(p.toLowerCase());
  return readings;
}

/** `/a;x=1/..;/b;y` → `/b`: parameters dropped from every segment, dot segments resolved again. */
function withoutParameters(path: string): string {
  const out: string[] = [];
  const segs = path.split('/');
  segs.forEach((raw, i) => {
    const seg = raw.split(';')[0]!;
    if (seg === '..') out.pop();
    else if (seg !== '.' && (seg !== '' || i === segs.length - 1)) out.push(seg);
  });
  // A last segment that was a dot segment or empty still leaves the path ending in "/".
  const last = segs[segs.length - 1]!.split(';')[0]!;
  const trailing = last === '' || last === '.' || last === '..';
  const body = out.filter((s) => s !== '').join('/');
  return `/${body}${trailing && body !== '' ? '/' : ''}`;
}
