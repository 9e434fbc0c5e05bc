import type { KindDefinition } from '../kind.js';
import { accessPolicy } from './accessPolicy.js';
import { oauth2Provider } from './oauth2Provider.js';
import { postgresCluster } from './postgresCluster.js';
import { quotaPolicy } from './quotaPolicy.js';
import { redisCluster } from './redisCluster.js';
import { riskModel } from './riskModel.js';

/** Every kind of nox.dev/v1alpha1. */
export const kinds: readonly KindDefinition[] = [
  quotaPolicy,
  oauth2Provider,
  accessPolicy,
  riskModel,
  redisCluster,
  postgresCluster,
];

export const policyKinds = kinds.filter((k) => k.role === 'policy');

export function kindByName(kind: string): KindDefinition | undefined {
  return kinds.find((k) => k.kind === kind);
}
