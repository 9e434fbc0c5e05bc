/**
 * The labels every cluster the operator runs (RedisCluster, PostgresCluster) puts on its
 * children, and the way back from a Pod to its cluster. Pods are owned by the StatefulSet,
 * not by the cluster, so owner references alone do not lead there; the labels do.
 */
export interface ClusterLabels {
  /** What the StatefulSet selects its pods by (immutable once created). */
  selectorLabels(name: string): Record<string, string>;
  labelsOf(name: string): Record<string, string>;
  /** The cluster a Pod belongs to, from its labels (for a runtime watch on Pods). */
  clusterOfPod(pod: {
    metadata?: { namespace?: string; labels?: Record<string, string> };
  }): { namespace: string; name: string }[];
}

export function clusterLabels(app: string, component: string): ClusterLabels {
  const selectorLabels = (name: string) => ({
    'app.kubernetes.io/name': app,
    'app.kubernetes.io/instance': name,
  });
  return {
    selectorLabels,
    labelsOf: (name) => ({
      ...selectorLabels(name),
      'app.kubernetes.io/component': component,
      'app.kubernetes.io/part-of': 'nox',
      'app.kubernetes.io/managed-by': 'nox-operator',
    }),
    clusterOfPod(pod) {
      const labels = pod.metadata?.labels ?? {};
      const name = labels['app.kubernetes.io/instance'];
      const namespace = pod.metadata?.namespace;
      if (
        labels['app.kubernetes.io/name'] !== app ||
        labels['app.kubernetes.io/managed-by'] !== 'nox-operator'
      )
        return [];
      return name && namespace ? [{ namespace, name }] : [];
    },
  };
}
