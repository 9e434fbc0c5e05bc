/**
 * The compiled, immutable form of the policy the request path reads. A snapshot is built
 * once per configuration change by `compile` and never mutated; the store swaps the
 * reference atomically, so a check sees one whole snapshot from start to end.
 */
export interface Snapshot {
  /** Monotonic per process; recorded in every decision. */
  readonly version: number;
  /** sha256 of the source, so two sidecars can tell they run the same policy. */
  readonly digest: string;
  readonly loadedAt: string;
  /** Path prefixes (segment-aligned) that are denied. */
  readonly denyPaths: readonly string[];
}

export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}

/** "/admin" matches "/admin" and "/admin/x", never "/administrator". */
export function pathHasPrefix(path: string, prefix: string): boolean {
  if (prefix === '/') return true;
  if (!path.startsWith(prefix)) return false;
  return path.length === prefix.length || prefix.endsWith('/') || path[prefix.length] === '/';
}
