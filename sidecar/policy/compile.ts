import { createHash } from 'node:crypto';
import {
  type AnyHostNamespaces,
  type HostClaim,
  hostClaim,
  resolveHostOwnership,
} from '../../common/resources/hostOwnership.js';
import { policyKinds } from '../../common/resources/kinds/index.js';
import type {
  AccessPolicySpec,
  OAuth2ProviderSpec,
  QuotaPolicySpec,
  RiskModelSpec,
} from '../../common/resources/types.gen.js';
import { validateResource } from '../../common/resources/validate.js';
import type { RawResource, SourceState } from '../config/source.js';
import { type CompiledAccessPolicy, compileAccessPolicy } from './accessPolicy.js';
import { HostHeaderNames } from './hostHeaders.js';
import { type CompiledQuotaPolicy, CompileError, compileQuotaPolicy } from './quotaPolicy.js';
import { RouteIndex } from './router.js';
import type { AcceptedResource, Rejection, Snapshot, Warning } from './snapshot.js';

const policyKindNames = new Set(policyKinds.map((k) => k.kind));

export function resourceKey(r: Pick<RawResource, 'kind' | 'metadata'>): string {
  return `${r.kind}/${r.metadata.namespace ?? 'default'}/${r.metadata.name}`;
}

/**
 * Pure: the resources a source delivered → the next snapshot. A resource that fails
 * validation or compilation is rejected with its reasons; if an earlier version of it was
 * in force, that version stays (per-resource last-known-good), and so do the resources of
 * a file that could not be parsed at all — a half-typed edit never drops a policy.
 */
export interface CompileOptions {
  /** Namespaces whose AccessPolicies may list no hosts (cover every host); default all. */
  readonly anyHostNamespaces?: AnyHostNamespaces;
}

export function compileSnapshot(
  state: SourceState,
  previous: Snapshot | undefined,
  version: number,
  now = new Date(),
  opts: CompileOptions = {},
): Snapshot {
  const accepted = new Map<string, AcceptedResource>();
  const rejected: Rejection[] = [];
  const keepPrevious = (key: string): boolean => {
    const prev = previous?.accepted.get(key);
    if (prev) accepted.set(key, prev);
    return prev !== undefined;
  };

  for (const raw of state.resources) {
    if (!policyKindNames.has(raw.kind)) continue;
    const key = resourceKey(raw);
    const { origin, ...object } = raw;
    const v = validateResource(object);
    if (!v.ok) {
      rejected.push({
        key,
        origin,
        errors: v.errors.map((e) => `${e.field}: ${e.message}`),
        keptPrevious: keepPrevious(key),
      });
      continue;
    }
    const candidate: AcceptedResource = {
      key,
      kind: raw.kind,
      origin,
      ...(raw.metadata.generation !== undefined ? { generation: raw.metadata.generation } : {}),
      object: v.object as Record<string, unknown>,
    };
    try {
      compileOne(candidate); // compile errors are found here, before anything is swapped
      accepted.set(key, candidate);
    } catch (e) {
      const msg = e instanceof CompileError ? e.message : `cannot compile: ${String(e)}`;
      rejected.push({ key, origin, errors: [msg], keptPrevious: keepPrevious(key) });
    }
  }
  for (const problem of state.problems) {
    for (const prev of previous?.accepted.values() ?? []) {
      if (!accepted.has(prev.key) && sameFile(prev.origin, problem.origin)) accepted.set(prev.key, prev);
    }
    rejected.push({
      key: problem.origin,
      origin: problem.origin,
      errors: [problem.reason],
      keptPrevious: true,
    });
  }
  return build(accepted, rejected, version, now, opts.anyHostNamespaces ?? '*');
}

function sameFile(resourceOrigin: string, problemOrigin: string): boolean {
  const file = (o: string) => o.replace(/[#:]\d+$/, '');
  return file(resourceOrigin) === file(problemOrigin);
}

type Compiled =
  | { kind: 'AccessPolicy'; value: CompiledAccessPolicy; spec: AccessPolicySpec }
  | { kind: 'QuotaPolicy'; value: CompiledQuotaPolicy; spec: QuotaPolicySpec }
  | { kind: 'RiskModel'; spec: RiskModelSpec }
  | { kind: 'OAuth2Provider'; spec: OAuth2ProviderSpec };

function compileOne(r: AcceptedResource): Compiled {
  const spec = r.object.spec;
  switch (r.kind) {
    case 'AccessPolicy':
      return {
        kind: 'AccessPolicy',
        spec: spec as AccessPolicySpec,
        value: compileAccessPolicy(r.key, spec as AccessPolicySpec),
      };
    case 'QuotaPolicy':
      return {
        kind: 'QuotaPolicy',
        spec: spec as QuotaPolicySpec,
        value: compileQuotaPolicy(r.key, spec as QuotaPolicySpec),
      };
    case 'RiskModel':
      return { kind: 'RiskModel', spec: spec as RiskModelSpec };
    case 'OAuth2Provider':
      return { kind: 'OAuth2Provider', spec: spec as OAuth2ProviderSpec };
    default:
      throw new Error(`not a policy kind: ${r.kind}`);
  }
}

function build(
  accepted: Map<string, AcceptedResource>,
  rejected: Rejection[],
  version: number,
  now: Date,
  anyHostNamespaces: AnyHostNamespaces,
): Snapshot {
  const access = new RouteIndex<CompiledAccessPolicy>();
  const quota = new RouteIndex<CompiledQuotaPolicy>();
  const risk = new RouteIndex<{ key: string; spec: RiskModelSpec }>();
  const riskModels: { key: string; spec: RiskModelSpec }[] = [];
  const providers = new Map<string, OAuth2ProviderSpec>();
  const identityHeaders: { hosts: readonly string[] | undefined; names: readonly string[] }[] = [];
  const warnings: Warning[] = [];
  const hash = createHash('sha256');
  const keys = [...accepted.keys()].sort();
  const compiled = keys.map((k) => [accepted.get(k)!, compileOne(accepted.get(k)!)] as const);
  for (const [r, c] of compiled) {
    hash.update(`${r.key}\n${JSON.stringify(r.object.spec)}\n`);
    if (c.kind === 'OAuth2Provider') providers.set(namespacedName(r), c.spec);
  }
  const ownership = resolveHostOwnership(
    compiled.flatMap(([r, c]): HostClaim[] =>
      c.kind === 'AccessPolicy'
        ? [hostClaim(r.object.metadata as { name: string }, c.spec.match?.hosts)]
        : [],
    ),
    anyHostNamespaces,
  );
  for (const [r, c] of compiled) {
    const ns = namespaceOf(r);
    if (c.kind === 'AccessPolicy') {
      for (const x of ownership.conflicts.get(r.key) ?? [])
        warnings.push({
          key: r.key,
          message: `spec.match.hosts: ${x.host} belongs to namespace ${x.ownerNamespace} (${x.ownerKey.slice('AccessPolicy/'.length)} claimed it first); this policy does not apply there`,
        });
      if (ownership.refusedAnyHost.has(r.key)) {
        warnings.push({
          key: r.key,
          message: `spec.match.hosts: a policy without hosts covers every host, which only the namespaces in NOX_ANY_HOST_NAMESPACES may do; this policy applies nowhere`,
        });
        continue;
      }
      if (!ownership.hosts.has(r.key)) continue; // every host it listed belongs elsewhere
      const hosts = ownership.hosts.get(r.key);
      access.add({ ...c.spec.match, ...(hosts ? { hosts } : {}) }, c.value);
      // The hosts it applies to: a host another namespace owns never has this policy's names stripped.
      identityHeaders.push({ hosts: hosts ?? c.spec.match?.hosts, names: c.value.identityHeaderNames });
      for (const p of c.value.providers) {
        if (!providers.has(`${ns}/${p}`)) {
          warnings.push({
            key: r.key,
            message: `spec.providers: OAuth2Provider ${ns}/${p} does not exist (or was rejected); callers cannot be identified through it`,
          });
        }
      }
    } else if (c.kind === 'QuotaPolicy') quota.add(c.spec.match, c.value);
    else if (c.kind === 'RiskModel') {
      risk.add(c.spec.match, { key: r.key, spec: c.spec });
      riskModels.push({ key: r.key, spec: c.spec });
    }
  }
  return {
    version,
    digest: hash.digest('hex'),
    loadedAt: now.toISOString(),
    access,
    quota,
    risk,
    riskModels,
    providers,
    identityHeaderNames: new HostHeaderNames(identityHeaders),
    accepted,
    rejected,
    warnings,
  };
}

function namespaceOf(r: AcceptedResource): string {
  return ((r.object.metadata as { namespace?: string }).namespace ?? 'default') as string;
}

function namespacedName(r: AcceptedResource): string {
  return `${namespaceOf(r)}/${(r.object.metadata as { name: string }).name}`;
}
