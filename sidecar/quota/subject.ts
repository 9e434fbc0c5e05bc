import { createHash } from 'node:crypto';

/**
 * The quota subject's id in Redis keys, usage rollups and overrides: a hash of its parts
 * ("User=<provider>:<sub>", "ApiKey=<key>", ...), so no user id or key is stored in clear.
 * The admin API computes the same hash when an operator names a subject.
 */
export function subjectHash(parts: readonly string[]): string {
  return createHash('sha256').update(parts.join('\u0000')).digest('base64url').slice(0, 22);
}

/** "QuotaPolicy/ns/name" → "ns/name", the policy's name in rollups and overrides. */
export function policyName(key: string): string {
  return key.slice(key.indexOf('/') + 1);
}
