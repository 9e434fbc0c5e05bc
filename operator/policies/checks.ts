import { createHash } from 'node:crypto';
import type { KubeObject, ObjectMeta } from '../../common/kube/client.js';
import {
  type AnyHostNamespaces,
  hostClaim,
  resolveHostOwnership,
} from '../../common/resources/hostOwnership.js';
import {
  publishedDigest,
  RISK_MODEL_DIGEST_ANNOTATION,
  RISK_MODEL_LABEL,
  wantedDigest,
} from '../../common/resources/kinds/riskModel.js';
import type {
  AccessPolicy,
  OAuth2Provider,
  QuotaPolicy,
  RiskModel,
} from '../../common/resources/types.gen.js';
import { validateResource } from '../../common/resources/validate.js';
import type { ConditionReason } from '../reasons.js';
import type { ConditionInput } from '../runtime/conditions.js';
import type { ModelCheck } from './modelChecks.js';

/**
 * Pure: a policy object and a view of what it refers to → its Accepted and Ready
 * conditions. No cluster, no clock; unit-tested in checks.test.ts.
 */

export type PolicyObject = QuotaPolicy | OAuth2Provider | AccessPolicy | RiskModel;
export type PolicyKindName = PolicyObject['kind'];

/** What the cache keeps of a Secret: key names and facts about the values, never the values. */
export interface SecretSummary extends KubeObject {
  keys: Record<string, { bytes: number; keyringProblem: string | null }>;
}

/** What the cache keeps of a ConfigMap: key names and the size and sha256 of each binaryData value. */
export interface ConfigMapSummary extends KubeObject {
  dataKeys: string[];
  binaryData: Record<string, { bytes: number; sha256: string }>;
  /** A labelled (model) ConfigMap's bytes, for ModelChecks; none for the others. */
  models?: Record<string, Uint8Array>;
  /** Labelled nox.dev/risk-model=true: the sidecars read it. */
  modelLabelled: boolean;
  /** Its nox.dev/sha256 annotation (lower case): the digest its publisher wrote. */
  publishedSha256?: string;
}

/** The objects a policy may refer to, all in the policy's namespace. */
export interface PolicyWorld {
  provider(namespace: string, name: string): OAuth2Provider | undefined;
  /** Every AccessPolicy the operator sees, in all namespaces (hosts belong to namespaces). */
  accessPolicies?(): readonly AccessPolicy[];
  /** Namespaces whose AccessPolicies may list no hosts (the sidecars' NOX_ANY_HOST_NAMESPACES). */
  anyHostNamespaces?(): AnyHostNamespaces;
  secret(namespace: string, name: string): SecretSummary | undefined;
  configMap(namespace: string, name: string): ConfigMapSummary | undefined;
  /** Whether a model loads as the sidecars load it (ModelChecks); absent: not checked here. */
  modelCheck?(sha256: string, width: number, bytes: Uint8Array): ModelCheck;
}

export interface Evaluation {
  accepted: ConditionInput;
  ready: ConditionInput;
  /** A RiskModel's model, checked and in force: status.loadedSha256. */
  loadedSha256?: string;
  /** Evaluate again after this long: a result is on its way (a model being checked). */
  retryMs?: number;
}

interface Problem {
  reason: ConditionReason;
  message: string;
}

function meta(m: ObjectMeta): ObjectMeta {
  return {
    name: m.name,
    ...(m.namespace ? { namespace: m.namespace } : {}),
    ...(m.uid ? { uid: m.uid } : {}),
    ...(m.resourceVersion ? { resourceVersion: m.resourceVersion } : {}),
    ...(m.labels ? { labels: m.labels } : {}),
    ...(m.ownerReferences ? { ownerReferences: m.ownerReferences } : {}),
  };
}

/**
 * Why a Secret value is not a session key ring, or null when it is one. The format is
 * sidecar/login/seal.ts parseKeys(): exactly 32 raw bytes, or 32-byte keys in hex or
 * base64 separated by whitespace or commas. Keep the two in step.
 */
export function keyringProblem(raw: Buffer): string | null {
  if (raw.length === 32) return null;
  if (raw.length > 4096) return `the value is ${raw.length} bytes, not a list of 32-byte keys`;
  const parts = raw
    .toString('utf8')
    .split(/[\s,]+/)
    .filter((p) => p !== '');
  if (parts.length === 0) return 'the value holds no key';
  for (const [i, p] of parts.entries()) {
    const key = /^[0-9a-fA-F]{64}$/.test(p) ? Buffer.from(p, 'hex') : Buffer.from(p, 'base64');
    if (key.length !== 32) return `key ${i + 1} is ${key.length} bytes; AES-256 needs 32`;
  }
  return null;
}

/** The informer transform for Secrets: the values are looked at once and dropped. */
export function summarizeSecret(obj: KubeObject): SecretSummary {
  const data = (obj as { data?: Record<string, string> }).data ?? {};
  const keys: SecretSummary['keys'] = {};
  for (const [k, v] of Object.entries(data)) {
    const raw = Buffer.from(v ?? '', 'base64');
    keys[k] = { bytes: raw.length, keyringProblem: keyringProblem(raw) };
  }
  return { apiVersion: 'v1', kind: 'Secret', metadata: meta(obj.metadata), keys };
}

/** The informer transform for ConfigMaps: binaryData is reduced to its digests. */
export function summarizeConfigMap(obj: KubeObject): ConfigMapSummary {
  const o = obj as { data?: Record<string, string>; binaryData?: Record<string, string> };
  const published = publishedDigest(obj.metadata as { annotations?: Record<string, string> });
  const binaryData: ConfigMapSummary['binaryData'] = {};
  const labelled = obj.metadata.labels?.[RISK_MODEL_LABEL] === 'true';
  const models: Record<string, Uint8Array> = {};
  for (const [k, v] of Object.entries(o.binaryData ?? {})) {
    const raw = Buffer.from(v ?? '', 'base64');
    binaryData[k] = { bytes: raw.length, sha256: createHash('sha256').update(raw).digest('hex') };
    if (labelled) models[k] = raw;
  }
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta(obj.metadata),
    dataKeys: Object.keys(o.data ?? {}),
    binaryData,
    modelLabelled: labelled,
    ...(labelled ? { models } : {}),
    ...(published ? { publishedSha256: published } : {}),
  };
}

// --- what refers to what (for mapping a changed Secret, ConfigMap or provider to policies) ---

export function providerSecretNames(p: OAuth2Provider): string[] {
  const names = new Set<string>();
  if (p.spec?.clientSecretRef?.name) names.add(p.spec.clientSecretRef.name);
  if (p.spec?.login?.encryptionKeySecretRef?.name) names.add(p.spec.login.encryptionKeySecretRef.name);
  return [...names];
}

export function accessPolicyProviderNames(a: AccessPolicy): string[] {
  return [...new Set([...(a.spec?.providers ?? []), ...(a.spec?.login?.providers ?? [])])];
}

export function riskModelConfigMapName(r: RiskModel): string | undefined {
  return r.spec?.model?.configMapRef?.name;
}

// --- evaluation ---

const validReason: ConditionReason = 'Valid';

export function evaluatePolicy(obj: PolicyObject, world: PolicyWorld): Evaluation {
  const v = validateResource({
    apiVersion: obj.apiVersion,
    kind: obj.kind,
    metadata: obj.metadata,
    spec: obj.spec,
  });
  if (!v.ok) {
    const message = `the spec is invalid: ${v.errors.map((e) => `${e.field}: ${e.message}`).join('; ')}`;
    return {
      accepted: { type: 'Accepted', status: 'False', reason: 'InvalidSpec', message },
      ready: {
        type: 'Ready',
        status: 'False',
        reason: 'InvalidSpec',
        message: 'not in force: the spec is invalid (see Accepted)',
      },
    };
  }
  const accepted: ConditionInput = {
    type: 'Accepted',
    status: 'True',
    reason: validReason,
    message: 'the spec is valid',
  };
  const namespace = obj.metadata.namespace ?? 'default';
  let problems: Problem[];
  let resolved: string;
  let loadedSha256: string | undefined;
  let retryMs: number | undefined;
  switch (obj.kind) {
    case 'QuotaPolicy':
      problems = [];
      resolved = `${obj.spec.tiers.length} tier(s); refers to nothing else`;
      break;
    case 'OAuth2Provider':
      ({ problems, resolved } = providerProblems(namespace, obj, world));
      break;
    case 'AccessPolicy':
      ({ problems, resolved } = accessPolicyProblems(namespace, obj, world));
      break;
    case 'RiskModel':
      ({ problems, resolved, loadedSha256, retryMs } = riskModelProblems(namespace, obj, world));
      break;
  }
  const first = problems[0];
  const extras = { ...(loadedSha256 ? { loadedSha256 } : {}), ...(retryMs ? { retryMs } : {}) };
  if (!first)
    return {
      accepted,
      ready: { type: 'Ready', status: 'True', reason: 'Ready', message: resolved },
      ...extras,
    };
  return {
    ...extras,
    accepted,
    ready: {
      type: 'Ready',
      status: 'False',
      reason: first.reason,
      message: problems.map((p) => p.message).join('; '),
    },
  };
}

function secretRefProblems(
  namespace: string,
  field: string,
  ref: { name: string; key: string },
  world: PolicyWorld,
  keyring = false,
): Problem[] {
  const secret = world.secret(namespace, ref.name);
  if (!secret)
    return [
      {
        reason: 'SecretNotFound',
        message: `${field}: Secret ${namespace}/${ref.name} does not exist; create it with key "${ref.key}"`,
      },
    ];
  const info = secret.keys[ref.key];
  if (!info) {
    const has = Object.keys(secret.keys);
    return [
      {
        reason: 'SecretKeyNotFound',
        message: `${field}: Secret ${namespace}/${ref.name} has no key "${ref.key}" (it has ${has.length ? has.map((k) => `"${k}"`).join(', ') : 'no keys'})`,
      },
    ];
  }
  if (info.bytes === 0)
    return [
      {
        reason: 'SecretKeyNotFound',
        message: `${field}: key "${ref.key}" of Secret ${namespace}/${ref.name} is empty`,
      },
    ];
  if (keyring && info.keyringProblem)
    return [
      {
        reason: 'InvalidEncryptionKey',
        message: `${field}: key "${ref.key}" of Secret ${namespace}/${ref.name} is not a session key: ${info.keyringProblem}`,
      },
    ];
  return [];
}

function providerProblems(
  namespace: string,
  p: OAuth2Provider,
  world: PolicyWorld,
): { problems: Problem[]; resolved: string } {
  const problems: Problem[] = [];
  const found: string[] = [];
  const client = p.spec.clientSecretRef;
  if (client) {
    const ps = secretRefProblems(namespace, 'spec.clientSecretRef', client, world);
    problems.push(...ps);
    if (ps.length === 0) found.push(`client secret in Secret ${client.name}`);
  }
  const login = p.spec.login;
  const keyRef = login?.encryptionKeySecretRef;
  if (login?.enabled && keyRef) {
    const ps = secretRefProblems(namespace, 'spec.login.encryptionKeySecretRef', keyRef, world, true);
    problems.push(...ps);
    if (ps.length === 0) found.push(`session key in Secret ${keyRef.name}`);
  }
  return { problems, resolved: found.length ? `found ${found.join(' and ')}` : 'refers to no Secret' };
}

function accessPolicyProblems(
  namespace: string,
  a: AccessPolicy,
  world: PolicyWorld,
): { problems: Problem[]; resolved: string } {
  const missing: Problem[] = [];
  const notReady: Problem[] = [];
  const loginOff: Problem[] = [];
  const loginNames = new Set(a.spec.login?.providers ?? []);
  const names = accessPolicyProviderNames(a);
  for (const name of names) {
    const field = (a.spec.providers ?? []).includes(name) ? 'spec.providers' : 'spec.login.providers';
    const provider = world.provider(namespace, name);
    if (!provider) {
      missing.push({
        reason: 'ProviderNotFound',
        message: `${field}: OAuth2Provider ${namespace}/${name} does not exist; callers cannot be identified through it`,
      });
      continue;
    }
    const own = evaluatePolicy(provider, world);
    const bad =
      own.accepted.status !== 'True' ? own.accepted : own.ready.status !== 'True' ? own.ready : undefined;
    if (bad) {
      notReady.push({
        reason: 'ProviderNotReady',
        message: `${field}: OAuth2Provider ${namespace}/${name} is not usable (${bad.reason}: ${bad.message})`,
      });
    }
    if (loginNames.has(name) && provider.spec?.login?.enabled !== true) {
      loginOff.push({
        reason: 'ProviderLoginDisabled',
        message: `spec.login.providers: OAuth2Provider ${namespace}/${name} does not have login.enabled; browsers cannot be sent to it`,
      });
    }
  }
  return {
    problems: [...hostProblems(namespace, a, world), ...missing, ...notReady, ...loginOff],
    resolved: names.length
      ? `OAuth2Provider(s) ${names.join(', ')} found and usable`
      : 'refers to no OAuth2Provider',
  };
}

/** Hosts this policy names that belong to another namespace (the sidecars' rule, hostOwnership.ts). */
function hostProblems(namespace: string, a: AccessPolicy, world: PolicyWorld): Problem[] {
  if (!a.spec.match?.hosts?.length) {
    const allowed = world.anyHostNamespaces?.() ?? '*';
    if (allowed === '*' || allowed.has(namespace)) return [];
    return [
      {
        reason: 'HostsRequired',
        message: `spec.match.hosts: a policy without hosts covers every host, which only the namespaces ${[...allowed].join(', ') || '(none)'} may do; list its hosts`,
      },
    ];
  }
  if (!world.accessPolicies) return [];
  const claims = world.accessPolicies().map((p) => hostClaim(p.metadata, p.spec.match?.hosts));
  const key = `AccessPolicy/${namespace}/${a.metadata.name}`;
  if (!claims.some((c) => c.key === key))
    claims.push({ key, namespace, createdAt: undefined, hosts: a.spec.match.hosts });
  // Whether a policy without hosts may exist is the sidecars' setting; here only hosts count.
  return (resolveHostOwnership(claims, '*').conflicts.get(key) ?? []).map((c) => ({
    reason: 'HostTaken',
    message: `spec.match.hosts: ${c.host} belongs to namespace ${c.ownerNamespace} (AccessPolicy ${c.ownerKey.slice('AccessPolicy/'.length)} named it first); this policy does not apply there`,
  }));
}

function riskModelProblems(
  namespace: string,
  r: RiskModel,
  world: PolicyWorld,
): { problems: Problem[]; resolved: string; loadedSha256?: string; retryMs?: number } {
  const { configMapRef: ref, path, sha256 } = r.spec.model;
  if (!ref) {
    return {
      problems: [],
      resolved: `the model is read from ${path ?? 'a file'} on each sidecar; its sha256 is checked when a sidecar loads it`,
    };
  }
  const cm = world.configMap(namespace, ref.name);
  if (!cm)
    return {
      problems: [
        {
          reason: 'ConfigMapNotFound',
          message: `spec.model.configMapRef: ConfigMap ${namespace}/${ref.name} does not exist; create it with the model under binaryData key "${ref.key}"`,
        },
      ],
      resolved: '',
    };
  const model = cm.binaryData[ref.key];
  if (!model) {
    const inData = cm.dataKeys.includes(ref.key);
    return {
      problems: [
        {
          reason: 'ConfigMapKeyNotFound',
          message: inData
            ? `spec.model.configMapRef: ConfigMap ${namespace}/${ref.name} has "${ref.key}" under data, not binaryData; a model is binary: store it under binaryData`
            : `spec.model.configMapRef: ConfigMap ${namespace}/${ref.name} has no binaryData key "${ref.key}"`,
        },
      ],
      resolved: '',
    };
  }
  const where = `binaryData "${ref.key}" of ConfigMap ${namespace}/${ref.name} (${model.bytes} bytes)`;
  const want = wantedDigest(sha256, cm.publishedSha256);
  const problems: Problem[] = [];
  if (!cm.modelLabelled)
    problems.push({
      reason: 'ConfigMapNotLabelled',
      message: `ConfigMap ${namespace}/${ref.name} lacks the label ${RISK_MODEL_LABEL}=true, so sidecars do not read it`,
    });
  if (!want)
    problems.push({
      reason: 'ModelDigestMissing',
      message: `neither spec.model.sha256 nor the ${RISK_MODEL_DIGEST_ANNOTATION} annotation of ConfigMap ${namespace}/${ref.name} names the model's digest; sidecars will not load it`,
    });
  else if (model.sha256 !== want)
    problems.push({
      reason: 'ModelDigestMismatch',
      message: sha256
        ? `spec.model.sha256 is ${sha256} but ${where} has sha256 ${model.sha256}; sidecars will not load it`
        : `the ${RISK_MODEL_DIGEST_ANNOTATION} annotation says ${want} but ${where} has sha256 ${model.sha256}; sidecars will not load it`,
    });
  if (problems.length) return { problems, resolved: '' };
  const bytes = cm.models?.[ref.key];
  const check = bytes && world.modelCheck?.(model.sha256, r.spec.features.length, bytes);
  if (check?.state === 'pending')
    return {
      problems: [{ reason: 'ModelChecking', message: `loading model ${model.sha256} as the sidecars will` }],
      resolved: '',
      retryMs: 250,
    };
  if (check?.state === 'refused')
    return {
      problems: [
        {
          reason: check.error.reason === 'WrongInputs' ? 'ModelWrongInputs' : 'InvalidModel',
          message: `${where}: ${check.error.message}; sidecars will not load it and keep the model they run`,
        },
      ],
      resolved: '',
    };
  return {
    problems: [],
    resolved: `model found in ConfigMap ${ref.name} key "${ref.key}" (${model.bytes} bytes), sha256 ${model.sha256} matches ${sha256 ? 'spec.model.sha256' : `its ${RISK_MODEL_DIGEST_ANNOTATION} annotation`}${check ? ', and loads' : ''}`,
    loadedSha256: model.sha256,
  };
}
