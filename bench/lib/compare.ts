import type { LoadResult } from './measure.js';

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/**
 * An A/B scenario's summary, per path (gRPC, Envoy): the median checks/s and p99 of the runs
 * of each mode (a result's tool ends with `<key>=<mode>`), what B costs in throughput, and the
 * difference of the medians of each of `extras` (B minus A), labelled.
 */
export function abSummary(
  results: readonly LoadResult[],
  key: string,
  [a, b]: readonly [string, string],
  extras: readonly { readonly label: string; readonly field: string; readonly unit: string }[],
): string {
  const lines = [`${key} summary (medians of the runs of each mode):`];
  for (const via of ['grpc', 'envoy'] as const) {
    const of = (mode: string, f: (r: LoadResult) => number) =>
      median(results.filter((r) => r.via === via && r.tool.endsWith(`${key}=${mode}`)).map(f));
    const [off, on] = [of(a, (r) => r.checksPerSec), of(b, (r) => r.checksPerSec)];
    const diff = (field: string) =>
      of(b, (r) => r.extra?.[field] ?? Number.NaN) - of(a, (r) => r.extra?.[field] ?? Number.NaN);
    const more = extras.map((x) => `${x.label} ${Math.round(diff(x.field) * 10) / 10} ${x.unit}`).join(', ');
    lines.push(
      `  ${via}: checks/s ${a} ${Math.round(off)}, ${b} ${Math.round(on)} (${(((on - off) / off) * 100).toFixed(1)} %); p99 ms ${a} ${of(a, (r) => r.p99).toFixed(1)}, ${b} ${of(b, (r) => r.p99).toFixed(1)}${more ? `; ${more}` : ''}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
