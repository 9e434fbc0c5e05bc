import type {
  V1Affinity,
  V1ObjectMeta,
  V1PersistentVolumeClaim,
  V1PodDisruptionBudget,
  V1Service,
  V1ServicePort,
  V1Volume,
} from '@kubernetes/client-node';
import { controllerRef } from './runtime/controller.js';

/**
 * Pieces of the children both data-cluster kinds (RedisCluster, PostgresCluster) create the
 * same way: metadata owned by the cluster, the `data` volume, spreading over nodes, and the
 * PodDisruptionBudget. Each kind's desired.ts composes them with what is its own.
 */

/** The children every data cluster has, by name. */
export interface ClusterChildNames {
  readonly configMap: string;
  /** Headless Service: one DNS name per pod, not-ready addresses published. */
  readonly headless: string;
  readonly statefulSet: string;
  readonly pdb: string;
}

/** `<name>-config`, `<name>-<headlessSuffix>`, and the StatefulSet and PDB named as the cluster. */
export function clusterChildNames(name: string, headlessSuffix: string): ClusterChildNames {
  return { configMap: `${name}-config`, headless: `${name}-${headlessSuffix}`, statefulSet: name, pdb: name };
}

interface Owner {
  apiVersion?: string;
  kind?: string;
  metadata: { name?: string; namespace?: string; uid?: string };
}

/** Metadata of a child named `name`: in the cluster's namespace, with its labels, controller-owned. */
export function childMeta(cluster: Owner, labels: Record<string, string>): (name: string) => V1ObjectMeta {
  const ownerReferences = [controllerRef(cluster as Parameters<typeof controllerRef>[0])];
  return (name) => ({ name, namespace: cluster.metadata.namespace!, labels, ownerReferences });
}

export interface StorageSpec {
  size: string;
  storageClassName?: string;
}

/**
 * The pod's `data` volume: a claim per pod from the StatefulSet's template when storage is
 * declared, else an emptyDir (data lives as long as the pod).
 */
export function dataVolume(
  storage: StorageSpec | undefined,
  labels: Record<string, string>,
): { volumes: V1Volume[]; volumeClaimTemplates?: V1PersistentVolumeClaim[] } {
  if (!storage) return { volumes: [{ name: 'data', emptyDir: {} }] };
  return {
    volumes: [],
    volumeClaimTemplates: [
      {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: { name: 'data', labels },
        spec: {
          accessModes: ['ReadWriteOnce'],
          resources: { requests: { storage: storage.size } },
          ...(storage.storageClassName ? { storageClassName: storage.storageClassName } : {}),
        },
      },
    ],
  };
}

/** Prefer pods of the cluster on different nodes, so that one node's loss takes few of them. */
export function spreadOverNodes(selector: Record<string, string>): V1Affinity {
  return {
    podAntiAffinity: {
      preferredDuringSchedulingIgnoredDuringExecution: [
        {
          weight: 100,
          podAffinityTerm: {
            topologyKey: 'kubernetes.io/hostname',
            labelSelector: { matchLabels: selector },
          },
        },
      ],
    },
  };
}

/** Voluntary disruptions (drains) take one pod of the cluster at a time. */
export function podDisruptionBudget(
  meta: V1ObjectMeta,
  selector: Record<string, string>,
): V1PodDisruptionBudget {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: meta,
    spec: { maxUnavailable: 1, selector: { matchLabels: selector } },
  };
}

/**
 * The StatefulSet's governing Service: one DNS name per pod, published before the pods are
 * ready, since instances must find each other (and the operator them) while they start.
 */
export function headlessService(
  meta: V1ObjectMeta,
  selector: Record<string, string>,
  ports: V1ServicePort[],
): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta,
    spec: { clusterIP: 'None', publishNotReadyAddresses: true, selector, ports },
  };
}
