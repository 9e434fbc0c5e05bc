import { group } from '../common/resources/kind.js';
import { policyKinds } from '../common/resources/kinds/index.js';

export interface PolicyRule {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
}

/**
 * Everything the operator may do with the Kubernetes API, declared next to the code that
 * needs it, with the reason. The chart's roles are to be generated from this, as they are
 * from sidecar/rbac.ts; a permission is granted only by adding it here. A controller that
 * needs more (children it creates) adds its own lines.
 */
export const operatorRbac: {
  /** In every namespace the operator serves (a ClusterRole when it serves all of them). */
  readonly namespaced: readonly PolicyRule[];
  /** Only in the operator's own namespace (a Role there). */
  readonly ownNamespace: readonly PolicyRule[];
  /** Cluster-scoped resources. */
  readonly cluster: readonly PolicyRule[];
} = {
  namespaced: [
    // policies/policyStatus.ts: reads the policies (list + watch into the cache) ...
    { apiGroups: [group], resources: policyKinds.map((k) => k.plural), verbs: ['get', 'list', 'watch'] },
    // ... and writes only their status (server-side apply to the status subresource).
    {
      apiGroups: [group],
      resources: policyKinds.map((k) => `${k.plural}/status`),
      verbs: ['get', 'patch', 'update'],
    },
    // policies/checks.ts: whether referenced Secrets and keys exist (values are summarized
    // on arrival and dropped: key names, sizes, session-key validity) ...
    { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'list', 'watch'] },
    // ... and ConfigMaps holding RiskModel models (kept as sha256 digests).
    { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'watch'] },

    // redis/controller.ts + redis/reconciler.ts: RedisClusters are read (list + watch into
    // the cache; get by the reconciler) like the policies above, and only their status is
    // written.
    { apiGroups: [group], resources: ['redisclusters'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: [group], resources: ['redisclusters/status'], verbs: ['get', 'patch', 'update'] },
    // Children carry a controller ownerReference with blockOwnerDeletion, which the API
    // server admits only from whoever may update the owner's finalizers.
    { apiGroups: [group], resources: ['redisclusters/finalizers'], verbs: ['update'] },
    // postgres/controller.ts + postgres/reconciler.ts: PostgresClusters likewise, and also
    // patched (metadata only): the designated primary and the fenced instances are
    // annotations changed by compare-and-swap on the resourceVersion, the guard that makes
    // two promotions at once impossible.
    { apiGroups: [group], resources: ['postgresclusters'], verbs: ['get', 'list', 'watch', 'patch'] },
    { apiGroups: [group], resources: ['postgresclusters/status'], verbs: ['get', 'patch', 'update'] },
    { apiGroups: [group], resources: ['postgresclusters/finalizers'], verbs: ['update'] },
    // The children, by server-side apply (a PATCH that creates what does not exist yet:
    // patch + create). Never deleted by the operator: garbage collection follows the owner
    // references. Read/watch (secrets and configmaps are already readable above): a changed
    // or deleted child wakes its RedisCluster up.
    { apiGroups: [''], resources: ['secrets', 'configmaps'], verbs: ['create', 'patch'] },
    {
      apiGroups: [''],
      resources: ['services'],
      verbs: ['get', 'list', 'watch', 'create', 'patch'],
    },
    {
      apiGroups: ['apps'],
      resources: ['statefulsets'],
      verbs: ['get', 'list', 'watch', 'create', 'patch'],
    },
    {
      apiGroups: ['policy'],
      resources: ['poddisruptionbudgets'],
      verbs: ['get', 'list', 'watch', 'create', 'patch'],
    },
    // The clusters' Pods (made by the StatefulSet controller): read for their IPs and
    // readiness (a Redis topology is driven over the Redis protocol), and patched (metadata
    // only) for a PostgresCluster: the role label the -rw/-ro Services select on and the
    // fencing annotation its instance manager obeys.
    { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch', 'patch'] },

    // training/reconcile.ts: a RiskModel's training runs as a CronJob under a ServiceAccount
    // whose Role may read and patch its one model ConfigMap (the operator holds get and
    // patch on ConfigMaps above, which RBAC requires of whoever grants them). Applied while
    // the RiskModel declares training, deleted when it no longer does; owned by the RiskModel.
    { apiGroups: ['batch'], resources: ['cronjobs'], verbs: ['create', 'patch', 'delete'] },
    { apiGroups: [''], resources: ['serviceaccounts'], verbs: ['create', 'patch', 'delete'] },
    {
      apiGroups: ['rbac.authorization.k8s.io'],
      resources: ['roles', 'rolebindings'],
      verbs: ['create', 'patch', 'delete'],
    },
    { apiGroups: [group], resources: ['riskmodels/finalizers'], verbs: ['update'] },
  ],
  ownNamespace: [
    // runtime/leaderElection.ts: the Lease that elects one reconciling replica.
    { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'create', 'update'] },
  ],
  cluster: [],
};
