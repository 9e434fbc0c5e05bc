/** The sidecar's /metrics around a run: samples in the Prometheus text format, summed by label. */
export type Samples = { name: string; labels: Record<string, string>; value: number }[] & {
  /** Metric families the sidecar declares (# TYPE), whether or not they have samples yet. */
  families: Set<string>;
};

export async function scrape(httpPort: number): Promise<Samples> {
  const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`);
  if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
  const out = Object.assign([], { families: new Set<string>() }) as Samples;
  for (const line of (await res.text()).split('\n')) {
    const family = /^# TYPE (\S+)/.exec(line)?.[1];
    if (family) out.families.add(family);
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

export function sum(samples: Samples, name: string, where: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

/**
 * /metrics once the sidecar has answered what is still in flight (a load tool stops with
 * calls outstanding; their work would otherwise land in one window and their checks in the
 * next): nox_checks_total unchanged across 100 ms, or after 2 s.
 */
export async function settledScrape(httpPort: number): Promise<Samples> {
  let last = await scrape(httpPort);
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const next = await scrape(httpPort);
    if (sum(next, 'nox_checks_total') === sum(last, 'nox_checks_total')) return next;
    last = next;
  }
  return last;
}
