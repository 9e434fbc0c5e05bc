import { group, version } from '../../common/resources/kind.js';
import { policyKinds } from '../../common/resources/kinds/index.js';
import type { ResourceKind } from './source.js';

/** The nox.dev kinds the sidecar enforces (the cluster kinds are the operator's). */
export const sidecarKinds: readonly ResourceKind[] = policyKinds.map((k) => ({
  group,
  version,
  kind: k.kind,
  plural: k.plural,
}));
