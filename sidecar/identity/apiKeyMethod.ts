import { createHash, timingSafeEqual } from 'node:crypto';
import type { Ctx } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Identity } from '../request/identity.js';
import type { CheckInput } from '../request/input.js';
import type { SecretStore } from '../secrets/secretStore.js';
import { type IdentityMethod, type MethodResult, policyNamespace } from './method.js';

interface KnownKey {
  readonly digest: Buffer;
  readonly identity: Identity;
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest();

/**
 * API keys kept in Kubernetes Secrets selected by label (AccessPolicy spec.apiKeys), one
 * key per Secret. The Secrets are watched by the SecretStore; the digests built from them
 * are dropped on every change, so a deleted Secret stops working as soon as the store sees
 * it. Keys are never logged, cached or put in a reason.
 */
export class ApiKeyMethod implements IdentityMethod {
  readonly name = 'apiKey';
  /** "namespace\0selector\0key" → the selected Secrets' key digests. */
  #known = new Map<string, readonly KnownKey[]>();

  constructor(private readonly secrets: SecretStore) {
    secrets.onChange(() => {
      this.#known = new Map();
    });
  }

  identify(input: CheckInput, _ctx: Ctx, policy: CompiledAccessPolicy): MethodResult {
    const spec = policy.apiKeys;
    if (!spec) return { kind: 'absent' };
    const presented = input.headers[spec.header.toLowerCase()];
    if (presented === undefined) return { kind: 'absent' };
    if (presented === '') return { kind: 'invalid', reason: `the ${spec.header} header is empty` };
    const digest = sha256(presented);
    let match: Identity | undefined;
    // Every candidate is compared, over fixed-length digests, so neither the position of the
    // matching key nor any length tells an attacker anything.
    for (const k of this.#keys(policyNamespace(policy), spec)) {
      if (timingSafeEqual(k.digest, digest) && !match) match = k.identity;
    }
    if (match) return { kind: 'identified', identity: match };
    return { kind: 'invalid', reason: `unknown API key in ${spec.header}` };
  }

  #keys(namespace: string, spec: NonNullable<CompiledAccessPolicy['apiKeys']>): readonly KnownKey[] {
    const labels = Object.entries(spec.selector).sort(([a], [b]) => (a < b ? -1 : 1));
    const cacheKey = `${namespace}\0${JSON.stringify(labels)}\0${spec.key}`;
    const cached = this.#known.get(cacheKey);
    if (cached) return cached;
    const keys: KnownKey[] = [];
    // An empty selector would make every Secret of the namespace an API key.
    if (labels.length > 0) {
      for (const [name, data] of this.secrets.select(namespace, spec.selector)) {
        // Secrets made with `kubectl create secret --from-file` often end in a newline; keys never do.
        const value = data[spec.key]?.toString('utf8').trim();
        if (!value) continue;
        keys.push({ digest: sha256(value), identity: toIdentity(namespace, name) });
      }
    }
    this.#known.set(cacheKey, keys);
    return keys;
  }
}

function toIdentity(namespace: string, name: string): Identity {
  return {
    subject: `apikey:${namespace}/${name}`,
    provider: 'apikey',
    method: 'apiKey',
    groups: [],
    roles: [],
    scopes: [],
    claims: { namespace, secret: name },
  };
}
