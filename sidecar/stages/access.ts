import type { Ctx, Stage } from '../pipeline/stage.js';
import { evaluateAccess } from '../policy/accessPolicy.js';
import type { CheckInput } from '../request/input.js';
import type { Deny, Outcome } from '../request/outcome.js';
import { notRouted } from './route.js';

/** AccessPolicy rules: may this caller make this request? */
export const accessStage: Stage = {
  name: 'access',
  run(input: CheckInput, ctx: Ctx): Outcome {
    const policy = ctx.accessPolicy;
    if (!policy) return notRouted('access');
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
