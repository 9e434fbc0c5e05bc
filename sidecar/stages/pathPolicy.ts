import type { CheckInput, Ctx, Outcome, Stage } from '../pipeline/types.js';
import { pathHasPrefix } from '../policy/snapshot.js';

/** Denies requests whose normalized path falls under one of the snapshot's denyPaths. */
export const pathPolicyStage: Stage = {
  name: 'path_policy',
  run(input: CheckInput, ctx: Ctx): Outcome {
    for (const prefix of ctx.snapshot.denyPaths) {
      if (pathHasPrefix(input.path, prefix)) {
        return {
          kind: 'deny',
          deny: { code: 'PATH_DENIED', reason: `path is under ${prefix}, which the policy denies` },
        };
      }
    }
    return { kind: 'continue' };
  },
};
