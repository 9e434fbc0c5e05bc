import { group, version } from '../resources/kind.js';
import { kinds } from '../resources/kinds/index.js';
import type { ResourceType } from './client.js';

/** The resource types Nox's programs read and write; the operator's RestMapper resolves any other by discovery. */

export const secrets: ResourceType = {
  group: '',
  version: 'v1',
  kind: 'Secret',
  plural: 'secrets',
  namespaced: true,
};
export const configMaps: ResourceType = {
  group: '',
  version: 'v1',
  kind: 'ConfigMap',
  plural: 'configmaps',
  namespaced: true,
};
export const services: ResourceType = {
  group: '',
  version: 'v1',
  kind: 'Service',
  plural: 'services',
  namespaced: true,
};
export const pods: ResourceType = { group: '', version: 'v1', kind: 'Pod', plural: 'pods', namespaced: true };
export const events: ResourceType = {
  group: '',
  version: 'v1',
  kind: 'Event',
  plural: 'events',
  namespaced: true,
};
export const statefulSets: ResourceType = {
  group: 'apps',
  version: 'v1',
  kind: 'StatefulSet',
  plural: 'statefulsets',
  namespaced: true,
};
export const podDisruptionBudgets: ResourceType = {
  group: 'policy',
  version: 'v1',
  kind: 'PodDisruptionBudget',
  plural: 'poddisruptionbudgets',
  namespaced: true,
};
export const leases: ResourceType = {
  group: 'coordination.k8s.io',
  version: 'v1',
  kind: 'Lease',
  plural: 'leases',
  namespaced: true,
};

/** Every nox.dev kind, by kind name. */
export const noxTypes: Readonly<Record<string, ResourceType>> = Object.fromEntries(
  kinds.map((k) => [k.kind, { group, version, kind: k.kind, plural: k.plural, namespaced: true }]),
);

export function noxType(kind: string): ResourceType {
  const t = noxTypes[kind];
  if (!t) throw new Error(`not a nox.dev kind: ${kind}`);
  return t;
}

export const builtinTypes: readonly ResourceType[] = [
  secrets,
  configMaps,
  services,
  pods,
  events,
  statefulSets,
  podDisruptionBudgets,
  leases,
  ...Object.values(noxTypes),
];
