import type { Ctx, Stage } from '../pipeline/stage.js';
import type { CompiledAccessPolicy } from '../policy/accessPolicy.js';
import type { Hit } from '../policy/router.js';
import type { CheckInput } from '../request/input.js';
import type { Outcome } from '../request/outcome.js';

/** Most specific policy wins: priority, then an exact host, then the longest path, then the key. */
export function pickPolicy(hits: readonly Hit<CompiledAccessPolicy>[]): CompiledAccessPolicy | undefined {
  let best: Hit<CompiledAccessPolicy> | undefined;
  for (const h of hits) {
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

/** Finds the AccessPolicy that governs the request; a route no policy covers is denied. */
export const routeStage: Stage = {
  name: 'route',
  run(input: CheckInput, ctx: Ctx): Outcome {
    const policy = pickPolicy(ctx.snapshot.access.lookup(input.host, input.path, input.method));
    if (!policy) {
      return {
        kind: 'deny',
        deny: {
          code: 'NO_POLICY',
          reason: `no AccessPolicy covers ${input.method} ${input.host}${input.path}`,
        },
      };
    }
    ctx.accessPolicy = policy;
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
