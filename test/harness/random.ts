/**
 * A seeded pseudo-random source (mulberry32) for generated data that must be the same on
 * every run (training sets, simulated traffic): uniform in [0, 1), and standard normal
 * (Box-Muller).
 */
export function seeded(seed: number): { next: () => number; normal: () => number } {
  let x = seed >>> 0;
  const next = () => {
    x = (x + 0x6d2b79f5) >>> 0;
    let t = Math.imul(x ^ (x >>> 15), 1 | x);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
  return { next, normal };
}
