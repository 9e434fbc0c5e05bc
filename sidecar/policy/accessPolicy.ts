import { BlockList, isIPv4, isIPv6 } from 'node:net';
import type { AccessPolicySpec } from '../../common/resources/types.gen.js';
import type { Identity } from '../request/identity.js';
import { pathHasPrefix } from '../request/paths.js';
import { CompileError } from './quotaPolicy.js';
import { type PathSpec, RouteIndex } from './router.js';

type RuleSpec = NonNullable<AccessPolicySpec['rules']>[number];
type When = NonNullable<RuleSpec['when']>;

export interface RequestFacts {
  readonly method: string;
  readonly host: string;
  readonly path: string;
  readonly sourceAddress: string;
}

export interface CompiledRule {
  readonly name: string;
  readonly action: 'Allow' | 'Deny' | 'Challenge';
  readonly challenge?: RuleSpec['challenge'];
  readonly holds: (req: RequestFacts, id: Identity | undefined, now: Date) => boolean;
}

export interface CompiledAccessPolicy {
  readonly key: string;
  /** The policy's namespace (from the key). */
  readonly namespace: string;
  readonly mode: 'Enforce' | 'DryRun';
  readonly providers: readonly string[];
  readonly rules: readonly CompiledRule[];
  readonly defaultAction: 'Allow' | 'Deny';
  readonly priority: number;
  /** Whether the upstream tells /Admin from /admin (spec.pathCase); see pathReadings. */
  readonly pathCase: 'Unknown' | 'Sensitive';
  /** Which decisions become audit events (spec.audit). */
  readonly audit: { readonly record: 'All' | 'Denies' | 'Sample'; readonly allowSampleRate: number };
  /** Header names the upstream gets the caller's identity in. */
  readonly identityHeaders: AccessPolicySpec['identityHeaders'];
  /** All of them, lower-case: removed from requests unless Nox sets them. */
  readonly identityHeaderNames: readonly string[];
  readonly apiKeys?: AccessPolicySpec['apiKeys'];
  readonly serviceAccounts?: AccessPolicySpec['serviceAccounts'];
  readonly clientCertificates?: AccessPolicySpec['clientCertificates'];
}

export interface AccessVerdict {
  readonly action: 'Allow' | 'Deny' | 'Challenge';
  /** The rule that decided, or "default". */
  readonly rule: string;
  readonly challenge?: RuleSpec['challenge'];
}

export function compileAccessPolicy(key: string, spec: AccessPolicySpec): CompiledAccessPolicy {
  const identityHeaders = spec.identityHeaders ?? {
    user: 'x-nox-user',
    provider: 'x-nox-provider',
    email: 'x-nox-email',
    groups: 'x-nox-groups',
  };
  const h = identityHeaders;
  return {
    key,
    namespace: key.split('/')[1] ?? 'default',
    mode: spec.mode,
    providers: spec.providers ?? [],
    defaultAction: spec.defaultAction,
    priority: spec.priority,
    pathCase: spec.pathCase ?? 'Unknown',
    audit: { record: spec.audit?.record ?? 'All', allowSampleRate: spec.audit?.allowSampleRate ?? 0.01 },
    identityHeaders,
    identityHeaderNames: [h.user, h.provider, h.email, h.groups, ...Object.keys(h.claims ?? {})].map((n) =>
      n.toLowerCase(),
    ),
    ...(spec.apiKeys ? { apiKeys: spec.apiKeys } : {}),
    ...(spec.serviceAccounts ? { serviceAccounts: spec.serviceAccounts } : {}),
    ...(spec.clientCertificates ? { clientCertificates: spec.clientCertificates } : {}),
    rules: (spec.rules ?? []).map((r, i) => ({
      name: r.name,
      action: r.action,
      ...(r.challenge ? { challenge: r.challenge } : {}),
      holds: compileWhen(`spec.rules[${i}].when`, r.when ?? {}, r.action !== 'Allow'),
    })),
  };
}

/** First rule whose conditions all hold decides; otherwise the policy's default. */
export function evaluateAccess(
  policy: CompiledAccessPolicy,
  req: RequestFacts,
  id: Identity | undefined,
  now: Date,
): AccessVerdict {
  for (const rule of policy.rules) {
    if (rule.holds(req, id, now)) {
      return {
        action: rule.action,
        rule: rule.name,
        ...(rule.challenge ? { challenge: rule.challenge } : {}),
      };
    }
  }
  return { action: policy.defaultAction, rule: 'default' };
}

type Check = (req: RequestFacts, id: Identity | undefined, now: Date) => boolean;

/**
 * Conditions → one predicate; every present condition must hold (identity ones fail for
 * anonymous callers). A condition that cannot be evaluated for a request (no usable source
 * address) holds for a Deny or Challenge rule and not for an Allow rule: fail closed either way.
 * An empty list is refused: it would read as "no condition" and so match everyone.
 */
function compileWhen(field: string, when: When, restricts: boolean): Check {
  for (const [name, value] of Object.entries(when))
    if (Array.isArray(value) && value.length === 0)
      throw new CompileError(
        `${field}.${name}`,
        'is empty; list at least one value or leave the condition out',
      );
  const checks: Check[] = [];
  const anyOf = (values: readonly string[] | undefined, pick: (id: Identity) => readonly string[]) => {
    if (!values || values.length === 0) return;
    const set = new Set(values);
    checks.push((_r, id) => id !== undefined && pick(id).some((v) => set.has(v)));
  };
  if (when.subjects?.length) {
    const set = new Set(when.subjects);
    checks.push(
      (_r, id) =>
        id !== undefined &&
        (set.has(id.subject) || (id.emailVerified === true && !!id.email && set.has(id.email))),
    );
  }
  anyOf(when.providers, (id) => [id.provider]);
  anyOf(when.groups, (id) => id.groups);
  anyOf(when.roles, (id) => id.roles);
  if (when.scopes?.length) {
    const required = when.scopes;
    checks.push((_r, id) => id !== undefined && required.every((s) => id.scopes.includes(s)));
  }
  if (when.authMethods?.length) {
    const required = when.authMethods;
    checks.push((_r, id) => {
      const amr = id?.claims.amr;
      return Array.isArray(amr) && required.every((m) => amr.includes(m));
    });
  }
  for (const c of when.claims ?? []) checks.push(compileClaim(c));
  if (when.authenticated) {
    const want = when.authenticated === 'Authenticated';
    checks.push((_r, id) => (id !== undefined) === want);
  }
  if (when.methods?.length) {
    const set = withHead(when.methods);
    checks.push((r) => set.has(r.method));
  }
  if (when.paths?.length) {
    const paths = when.paths;
    checks.push((r) => paths.some((p) => pathMatches(p, r.path)));
  }
  if (when.hosts?.length) {
    const index = new RouteIndex<true>();
    index.add({ hosts: when.hosts }, true);
    checks.push((r) => index.lookup(r.host, '/', 'GET').length > 0);
  }
  if (when.sourceCIDRs?.length) checks.push(compileCidrs(when.sourceCIDRs, restricts));
  if (when.schedule) checks.push(compileSchedule(when.schedule));
  return (req, id, now) => {
    for (const c of checks) if (!c(req, id, now)) return false;
    return true;
  };
}

/**
 * Method sets as upstreams serve them: a server answers HEAD with its GET handler (Go's
 * net/http, Node frameworks, Spring, Tomcat), so a rule or route naming GET covers HEAD too.
 */
export function withHead(methods: readonly string[]): Set<string> {
  const set = new Set<string>(methods);
  if (set.has('GET')) set.add('HEAD');
  return set;
}

export function pathMatches(p: PathSpec, path: string): boolean {
  return (p.type ?? 'Prefix') === 'Exact' ? path === p.value : pathHasPrefix(path, p.value);
}

function compileClaim(c: NonNullable<When['claims']>[number]): Check {
  const parts = c.name.split('.');
  const values = new Set(c.values ?? []);
  const read = (id: Identity): unknown => {
    let v: unknown = id.claims;
    for (const p of parts)
      v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[p] : undefined;
    return v;
  };
  const inValues = (v: unknown) =>
    Array.isArray(v) ? v.some((x) => values.has(String(x))) : v !== undefined && values.has(String(v));
  switch (c.operator) {
    case 'Exists':
      return (_r, id) => id !== undefined && read(id) !== undefined;
    case 'DoesNotExist':
      return (_r, id) => id !== undefined && read(id) === undefined;
    case 'NotIn':
      return (_r, id) => id !== undefined && !inValues(read(id));
    default:
      return (_r, id) => id !== undefined && inValues(read(id));
  }
}

function compileCidrs(cidrs: readonly string[], whenUnknown: boolean): Check {
  const list = new BlockList();
  for (const c of cidrs) {
    const [addr, bits] = c.split('/') as [string, string];
    list.addSubnet(addr, Number(bits), isIPv6(addr) ? 'ipv6' : 'ipv4');
  }
  return (r) => {
    const a = r.sourceAddress;
    if (isIPv4(a)) return list.check(a, 'ipv4');
    if (isIPv6(a)) return list.check(a, 'ipv6');
    // No usable source address: inside for a rule that denies, outside for one that allows.
    return whenUnknown;
  };
}

const dayIndex: Record<string, number> = { Mon: 1, Tue: 2, Wed: 3, Thu: 4, Fri: 5, Sat: 6, Sun: 7 };

function compileSchedule(s: NonNullable<When['schedule']>): Check {
  const fmt = new Intl.DateTimeFormat('en-GB', {
    timeZone: s.timeZone,
    weekday: 'short',
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  });
  const days = s.days && s.days.length > 0 ? new Set(s.days.map((d) => dayIndex[d])) : undefined;
  const toMin = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));
  const start = toMin(s.start);
  const end = toMin(s.end);
  return (_r, _id, now) => {
    const parts = fmt.formatToParts(now);
    const get = (t: string) => parts.find((p) => p.type === t)?.value ?? '';
    const minute = Number(get('hour')) * 60 + Number(get('minute'));
    let day = dayIndex[get('weekday')]!;
    let inside: boolean;
    if (start < end) inside = minute >= start && minute < end;
    else {
      // Spans midnight: after start today, or before end, when the window began yesterday.
      inside = minute >= start || minute < end;
      if (minute < end) day = day === 1 ? 7 : day - 1;
    }
    return inside && (!days || days.has(day));
  };
}
