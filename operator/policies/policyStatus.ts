import type { Informer } from '../../common/kube/informer.js';
import { configMaps, noxType, secrets } from '../../common/kube/resources.js';
import type { Logger } from '../../common/logger.js';
import type { AnyHostNamespaces } from '../../common/resources/hostOwnership.js';
import { apiVersion } from '../../common/resources/kind.js';
import type { AccessPolicy, OAuth2Provider, RiskModel } from '../../common/resources/types.gen.js';
import type { Cache } from '../runtime/cache.js';
import { type Condition, findCondition, sameConditions, setCondition } from '../runtime/conditions.js';
import { Controller, type Watch, watchOf } from '../runtime/controller.js';
import type { Manager } from '../runtime/manager.js';
import type { RateLimiterOptions } from '../runtime/queue.js';
import type { Applier, ObjectKey, ReconcileResult, Reconciler } from '../runtime/types.js';
import type { TrainingSettings } from '../training/desired.js';
import { reconcileTraining } from '../training/reconcile.js';
import {
  accessPolicyProviderNames,
  type ConfigMapSummary,
  evaluatePolicy,
  type PolicyKindName,
  type PolicyObject,
  type PolicyWorld,
  providerSecretNames,
  riskModelConfigMapName,
  type SecretSummary,
  summarizeConfigMap,
  summarizeSecret,
} from './checks.js';
import { type ModelCheck, ModelChecks } from './modelChecks.js';

/**
 * Status of the policy kinds (QuotaPolicy, OAuth2Provider, AccessPolicy, RiskModel): the
 * operator checks what the CRD schema cannot — that referenced OAuth2Providers, Secrets
 * and keys, ConfigMaps and model digests exist and match — and writes observedGeneration
 * and the conditions Accepted and Ready (reasons in ../reasons.ts). It creates nothing; the
 * sidecars read the policies themselves.
 */

export const policyKindNames: readonly PolicyKindName[] = [
  'QuotaPolicy',
  'OAuth2Provider',
  'AccessPolicy',
  'RiskModel',
];

/** The condition types this reconciler owns (others' conditions are left alone by server-side apply). */
const ownTypes = new Set(['Accepted', 'Ready']);

/** The cluster seen through the shared cache: what policies may refer to. */
export class CacheWorld implements PolicyWorld {
  constructor(
    private readonly providers: Informer<OAuth2Provider & { metadata: { name: string } }>,
    private readonly secretKeys: Informer<SecretSummary>,
    private readonly configMapDigests: Informer<ConfigMapSummary>,
    private readonly policies?: Informer<AccessPolicy & { metadata: { name: string } }>,
    private readonly anyHost: AnyHostNamespaces = '*',
    private readonly models = new ModelChecks(),
  ) {}

  modelCheck(sha256: string, width: number, bytes: Uint8Array): ModelCheck {
    return this.models.check(sha256, width, bytes);
  }

  anyHostNamespaces(): AnyHostNamespaces {
    return this.anyHost;
  }

  accessPolicies(): readonly AccessPolicy[] {
    return this.policies?.list(undefined) ?? [];
  }

  provider(namespace: string, name: string): OAuth2Provider | undefined {
    return this.providers.get({ namespace, name });
  }
  secret(namespace: string, name: string): SecretSummary | undefined {
    return this.secretKeys.get({ namespace, name });
  }
  configMap(namespace: string, name: string): ConfigMapSummary | undefined {
    return this.configMapDigests.get({ namespace, name });
  }
}

export interface PolicyStatusDeps {
  /** The policy kind's informer (from the cache). */
  informer: Informer<PolicyObject & { metadata: { name: string } }>;
  world: PolicyWorld;
  applier: Applier;
  log: Logger;
  now?: () => Date;
  /** RiskModels: where their training CronJobs' trainer comes from (operator/training). */
  training?: TrainingSettings;
}

export class PolicyStatusReconciler implements Reconciler {
  readonly #deps: PolicyStatusDeps;
  readonly #log: Logger;

  constructor(
    readonly kind: PolicyKindName,
    deps: PolicyStatusDeps,
  ) {
    this.#deps = deps;
    this.#log = deps.log.child({ reconciler: kind });
  }

  async reconcile(key: ObjectKey): Promise<ReconcileResult> {
    const obj = this.#deps.informer.get(key);
    // Gone (or going): nothing to report on.
    if (!obj || (obj.metadata as { deletionTimestamp?: string }).deletionTimestamp) return { kind: 'done' };
    const generation = obj.metadata.generation;
    const now = this.#deps.now?.() ?? new Date();
    const { accepted, ready, loadedSha256: checked, retryMs } = evaluatePolicy(obj, this.#deps.world);
    if (obj.kind === 'RiskModel' && this.#deps.training && accepted.status === 'True')
      await reconcileTraining(
        obj,
        this.#deps.applier,
        this.#deps.training,
        obj.status?.observedGeneration !== generation,
      );
    // A RiskModel's model in force: the one just checked, else the last one (the sidecars keep
    // running it while a newer one is refused).
    const previous = (obj.status as { loadedSha256?: string } | undefined)?.loadedSha256;
    const loadedSha256 = checked ?? previous;
    const retry: ReconcileResult = retryMs ? { kind: 'requeue', afterMs: retryMs } : { kind: 'done' };
    const current = ((obj.status?.conditions ?? []) as Condition[]).filter((c) => ownTypes.has(c.type));
    let next = setCondition(
      current,
      { ...accepted, ...(generation !== undefined ? { observedGeneration: generation } : {}) },
      now,
    );
    next = setCondition(
      next,
      { ...ready, ...(generation !== undefined ? { observedGeneration: generation } : {}) },
      now,
    );
    if (
      obj.status?.observedGeneration === generation &&
      sameConditions(current, next) &&
      loadedSha256 === previous
    )
      return retry;
    await this.#deps.applier.applyStatus({
      apiVersion,
      kind: this.kind,
      metadata: { name: key.name, namespace: key.namespace },
      status: {
        ...(generation !== undefined ? { observedGeneration: generation } : {}),
        conditions: next,
        ...(loadedSha256 ? { loadedSha256 } : {}),
      },
    });
    const before = findCondition(current, 'Ready');
    if (before?.status !== ready.status || before?.reason !== ready.reason) {
      const log = ready.status === 'True' ? this.#log.info.bind(this.#log) : this.#log.warn.bind(this.#log);
      log(
        {
          key: `${key.namespace}/${key.name}`,
          generation,
          ready: ready.status,
          reason: ready.reason,
          message: ready.message,
        },
        'policy status',
      );
    }
    return retry;
  }
}

export interface PolicyControllerOptions {
  /** The sidecars' NOX_ANY_HOST_NAMESPACES: which namespaces may have AccessPolicies without hosts. */
  anyHostNamespaces?: AnyHostNamespaces;
  concurrency?: number;
  resyncMs?: number;
  rateLimit?: RateLimiterOptions;
  training?: TrainingSettings;
}

type Named<T> = T & { metadata: { name: string; namespace?: string } };
const keyOf = (o: { metadata: { name: string; namespace?: string } }): ObjectKey => ({
  namespace: o.metadata.namespace ?? '',
  name: o.metadata.name,
});

/**
 * The four policy status controllers, on `manager`'s cache, with the watches that wake a
 * policy up when something it refers to changes:
 * Secret → OAuth2Providers naming it, and AccessPolicies naming those providers;
 * OAuth2Provider → AccessPolicies naming it; ConfigMap → RiskModels naming it.
 */
export function policyControllers(manager: Manager, opts: PolicyControllerOptions = {}): Controller[] {
  const cache: Cache = manager.cache;
  const secretKeys = cache.informer<SecretSummary>(secrets, { transform: summarizeSecret, variant: 'keys' });
  const cmDigests = cache.informer<ConfigMapSummary>(configMaps, {
    transform: summarizeConfigMap,
    variant: 'digests',
  });
  const informer = <T>(kind: PolicyKindName) => cache.informer<Named<T>>(noxType(kind));
  const providers = informer<OAuth2Provider>('OAuth2Provider');
  const accessPolicies = informer<AccessPolicy>('AccessPolicy');
  const riskModels = informer<RiskModel>('RiskModel');
  const world = new CacheWorld(providers, secretKeys, cmDigests, accessPolicies, opts.anyHostNamespaces);

  const providersUsingSecret = (s: SecretSummary) =>
    providers.list(s.metadata.namespace).filter((p) => providerSecretNames(p).includes(s.metadata.name));
  const policiesUsingProvider = (namespace: string | undefined, provider: string) =>
    accessPolicies.list(namespace).filter((a) => accessPolicyProviderNames(a).includes(provider));

  const watches: Record<PolicyKindName, Watch[]> = {
    QuotaPolicy: [],
    OAuth2Provider: [watchOf(secretKeys, (s) => providersUsingSecret(s).map(keyOf))],
    AccessPolicy: [
      // A host belongs to whoever named it first: a policy that names, stops naming or gives
      // up a host can change every other policy naming a host at all.
      watchOf(accessPolicies, () =>
        accessPolicies
          .list(undefined)
          .filter((a) => a.spec.match?.hosts?.length)
          .map(keyOf),
      ),
      watchOf(providers, (p) => policiesUsingProvider(p.metadata.namespace, p.metadata.name).map(keyOf)),
      watchOf(secretKeys, (s) =>
        providersUsingSecret(s).flatMap((p) =>
          policiesUsingProvider(s.metadata.namespace, p.metadata.name).map(keyOf),
        ),
      ),
    ],
    RiskModel: [
      watchOf(cmDigests, (cm) =>
        riskModels
          .list(cm.metadata.namespace)
          .filter((r) => riskModelConfigMapName(r) === cm.metadata.name)
          .map(keyOf),
      ),
    ],
  };

  return policyKindNames.map(
    (kind) =>
      new Controller({
        for: noxType(kind),
        reconciler: new PolicyStatusReconciler(kind, {
          informer: informer<PolicyObject>(kind),
          world,
          applier: manager.applier,
          log: manager.log,
          ...(opts.training ? { training: opts.training } : {}),
        }),
        watches: watches[kind],
        ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
        ...(opts.resyncMs ? { resyncMs: opts.resyncMs } : {}),
        ...(opts.rateLimit ? { rateLimit: opts.rateLimit } : {}),
      }),
  );
}
