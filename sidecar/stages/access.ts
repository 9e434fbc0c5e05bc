import type { Ctx, Stage } from '../pipeline/stage.js';
import { evaluateAccess } from '../policy/accessPolicy.js';
import type { CheckInput } from '../request/input.js';
import type { Deny, Outcome } from '../request/outcome.js';
import { notRouted } from './route.js';

/**
 * AccessPolicy rules: may this caller make this request? A path that reads several ways
 * (ctx.pathReadings) is allowed only if every reading is; otherwise the first reading's
 * deny or challenge, in the order the route stage gave, decides.
 */
export const accessStage: Stage = {
  name: 'access',
  run(input: CheckInput, ctx: Ctx): Outcome {
    const policy = ctx.accessPolicy;
    if (!policy) return notRouted('access');
    const now = new Date(ctx.now);
    let verdict = evaluateAccess(policy, input, ctx.identity, now);
    let readAs: string | undefined;
    for (const path of ctx.pathReadings?.slice(1) ?? []) {
      if (verdict.action !== 'Allow') break;
      const v = evaluateAccess(policy, { ...input, path }, ctx.identity, now);
      if (v.action !== 'Allow') {
        verdict = v;
        readAs = path;
      }
    }
    ctx.accessRule = verdict.rule;
    if (verdict.action === 'Allow')
      return { kind: 'continue', upstreamHeaders: { 'x-nox-access-rule': verdict.rule } };
    const where = `${policy.key.slice('AccessPolicy/'.length)} rule ${verdict.rule}`;
    const asRead = readAs === undefined ? '' : ` (the path read as ${readAs}, as some servers would)`;
    const deny: Deny =
      verdict.action === 'Deny'
        ? { code: 'ACCESS_DENIED', reason: `denied by AccessPolicy ${where}${asRead}` }
        : { code: 'CHALLENGE_REQUIRED', reason: `AccessPolicy ${where} requires a fresh login${asRead}` };
    if (policy.mode === 'DryRun') return { kind: 'continue', dryRunDeny: deny };
    return { kind: 'deny', deny };
  },
};
