import { group } from '../common/resources/kind.js';
import { policyKinds } from '../common/resources/kinds/index.js';

export interface PolicyRule {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
}

/**
 * Everything the sidecar may do with the Kubernetes API, declared next to the code that
 * needs it. The chart's Role and ClusterRole are generated from this (`make generate`), so
 * a permission can only be granted by adding it here, with its reason.
 */
export const sidecarRbac: {
  readonly namespaced: readonly PolicyRule[];
  readonly cluster: readonly PolicyRule[];
} = {
  namespaced: [
    // config/kubeSource.ts: list + watch of the policies it enforces; never writes them.
    { apiGroups: [group], resources: policyKinds.map((k) => k.plural), verbs: ['get', 'list', 'watch'] },
    // secrets/kubeSecretStore.ts: client secrets, session keys and API keys, by name or label.
    { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'list', 'watch'] },
    // risk/modelStore.ts: the ConfigMaps labelled nox.dev/risk-model=true, which hold models.
    { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'watch'] },
  ],
  cluster: [
    // identity/serviceAccountMethod.ts: ServiceAccount tokens are checked with TokenReview.
    { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
  ],
};
