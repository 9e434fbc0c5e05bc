import { apiVersion, category, group, type KindDefinition, version } from './kind.js';
import type { Schema } from './schema.js';

/** The CustomResourceDefinition of a kind (pure). */
export function crdFor(def: KindDefinition): Record<string, unknown> {
  const openAPIV3Schema: Schema = {
    type: 'object',
    description: def.description,
    properties: {
      apiVersion: { type: 'string', description: `${apiVersion}` },
      kind: { type: 'string', description: def.kind },
      metadata: def.name ? { type: 'object', properties: { name: def.name } } : { type: 'object' },
      spec: def.spec,
      status: def.status,
    },
    required: ['spec'],
    ...(def.rules && def.rules.length > 0 ? { 'x-kubernetes-validations': [...def.rules] } : {}),
  };
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${def.plural}.${group}`,
      labels: { 'app.kubernetes.io/part-of': 'nox' },
    },
    spec: {
      group,
      scope: 'Namespaced',
      names: {
        kind: def.kind,
        listKind: `${def.kind}List`,
        plural: def.plural,
        singular: def.singular,
        shortNames: [...def.shortNames],
        categories: [category],
      },
      versions: [
        {
          name: version,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: def.printerColumns.map((c) => ({ ...c })),
          schema: { openAPIV3Schema },
        },
      ],
    },
  };
}
