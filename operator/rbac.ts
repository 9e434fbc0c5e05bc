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
  ],
  ownNamespace: [
    // runtime/leaderElection.ts: the Lease that elects one reconciling replica.
    { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'create', 'update'] },
  ],
  cluster: [],
};
