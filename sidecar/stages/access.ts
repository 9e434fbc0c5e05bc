import type { CheckInput, Ctx, Deny, Outcome, Stage } from '../pipeline/types.js';
import { type CompiledAccessPolicy, evaluateAccess } from '../policy/accessPolicy.js';
import type { Hit } from '../policy/router.js';

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

/** AccessPolicy: may this caller make this request? Routes no policy covers are denied. */
export const accessStage: Stage = {
  name: 'access',
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
    const verdict = evaluateAccess(policy, input, ctx.identity, new Date(ctx.now));
    if (verdict.action === 'Allow')
      return { kind: 'continue', upstreamHeaders: { 'x-nox-access-rule': verdict.rule } };
    const where = `${policy.key.slice('AccessPolicy/'.length)} rule ${verdict.rule}`;
    const deny: Deny =
      verdict.action === 'Deny'
        ? { code: 'ACCESS_DENIED', reason: `denied by AccessPolicy ${where}` }
        : { code: 'CHALLENGE_REQUIRED', reason: `AccessPolicy ${where} requires a fresh login` };
    if (policy.mode === 'DryRun') return { kind: 'continue', dryRunDeny: deny };
    return { kind: 'deny', deny };
  },
};
