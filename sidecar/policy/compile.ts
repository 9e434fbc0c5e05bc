import { createHash } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { deepFreeze, type Snapshot } from './snapshot.js';

export class PolicyError extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'PolicyError';
  }
}

const knownKeys = new Set(['denyPaths']);

/**
 * Pure: policy source text → snapshot, or a PolicyError naming the field and the rule.
 * Unknown keys are errors, not ignored: a typo must not silently weaken a policy.
 */
export function compile(source: string, version: number, now: Date = new Date()): Snapshot {
  let doc: unknown;
  try {
    doc = parseYaml(source);
  } catch (e) {
    throw new PolicyError('(document)', `not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new PolicyError('(document)', 'must be a YAML mapping');
  }
  const obj = doc as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!knownKeys.has(key)) throw new PolicyError(key, 'unknown field');
  }
  const denyPaths = obj.denyPaths ?? [];
  if (!Array.isArray(denyPaths)) throw new PolicyError('denyPaths', 'must be a list of paths');
  denyPaths.forEach((p, i) => {
    if (typeof p !== 'string') throw new PolicyError(`denyPaths[${i}]`, 'must be a string');
    if (!p.startsWith('/')) throw new PolicyError(`denyPaths[${i}]`, `must start with "/", got "${p}"`);
    if (/[?#%]/.test(p) || p.includes('//') || /\/\.\.?(\/|$)/.test(p)) {
      throw new PolicyError(
        `denyPaths[${i}]`,
        `must be a normalized path without query, "%", "//" or dot segments, got "${p}"`,
      );
    }
  });
  return deepFreeze({
    version,
    digest: createHash('sha256').update(source).digest('hex'),
    loadedAt: now.toISOString(),
    denyPaths: [...new Set(denyPaths as string[])],
  });
}
