import type { RiskModelSpec } from '../../common/resources/types.gen.js';
import type { Ctx, Stage } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Hit } from '../policy/router.js';
import type { CheckInput } from '../request/input.js';
import type { Outcome } from '../request/outcome.js';
import { pathReadings } from '../request/pathReadings.js';

/**
 * Most specific policy wins: priority, then an exact host, then the longest path, then the
 * key. A host named exactly belongs to that policy's namespace (hostOwnership.ts): another
 * namespace's wildcard over it does not compete there, whatever its priority.
 */
export function pickPolicy(hits: readonly Hit<CompiledAccessPolicy>[]): CompiledAccessPolicy | undefined {
  let best: Hit<CompiledAccessPolicy> | undefined;
  const owner = hits.length > 1 ? hits.find((h) => h.exactHost)?.value.namespace : undefined;
  for (const h of hits) {
    if (owner !== undefined && !h.exactHost && !h.anyHost && h.value.namespace !== owner) continue;
    if (
      !best ||
      h.value.priority > best.value.priority ||
      (h.value.priority === best.value.priority &&
        (Number(h.exactHost) - Number(best.exactHost) ||
          h.pathLength - best.pathLength ||
          (h.value.key < best.value.key ? 1 : -1)) > 0)
    ) {
      best = h;
    }
  }
  return best?.value;
}

/**
 * Finds the AccessPolicy that governs the request; a route no policy covers is denied. The
 * path as sent picks the policy; every other reading an upstream may route by (see
 * pathReadings) must pick the same one, or the request is denied: which policy applies would
 * depend on the server behind Envoy.
 */
export const routeStage: Stage = {
  name: 'route',
  run(input: CheckInput, ctx: Ctx): Outcome {
    const policyFor = (path: string) =>
      pickPolicy(ctx.snapshot.access.lookup(input.host, path, input.method));
    const policy = policyFor(input.path);
    if (!policy) {
      return {
        kind: 'deny',
        deny: {
          code: 'NO_POLICY',
          reason: `no AccessPolicy covers ${input.method} ${input.host}${input.path}`,
        },
      };
    }
    const readings = pathReadings(input.path, policy.pathCase === 'Sensitive');
    for (const path of readings.slice(1)) {
      const other = policyFor(path);
      if (other !== policy) {
        const name = (p: CompiledAccessPolicy | undefined) =>
          p ? `AccessPolicy ${p.key.slice('AccessPolicy/'.length)}` : 'no AccessPolicy';
        return {
          kind: 'deny',
          deny: {
            code: 'PATH_AMBIGUOUS',
            reason: `${input.path} is governed by ${name(policy)}, but read as ${path} (as some servers would) by ${name(other)}`,
          },
        };
      }
    }
    ctx.accessPolicy = policy;
    if (readings.length > 1) ctx.pathReadings = readings;
    // The RiskModel that scores it, if any: the most specific (exact host, longest path, key).
    let risk: Hit<{ key: string; spec: RiskModelSpec }> | undefined;
    for (const h of ctx.snapshot.risk.lookup(input.host, input.path, input.method)) {
      if (
        !risk ||
        (Number(h.exactHost) - Number(risk.exactHost) ||
          h.pathLength - risk.pathLength ||
          (h.value.key < risk.value.key ? 1 : -1)) > 0
      )
        risk = h;
    }
    if (risk) ctx.riskModel = risk.value;
    return { kind: 'continue' };
  },
};

/**
 * A stage that needs the routed policy ran without one: the stage order is wrong (see
 * order.ts). Nothing can be decided, so it is an error, and an error is a deny.
 */
export function notRouted(stage: string): Outcome {
  return { kind: 'error', code: 'INTERNAL', cause: new Error(`${stage} stage ran without a routed policy`) };
}
