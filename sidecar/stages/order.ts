import type { Stage } from '../pipeline/stage.js';
import { accessStage } from './access.js';
import type { IdentifyStage } from './identify.js';
import type { LoginStage } from './login.js';
import type { QuotaStage } from './quota.js';
import { stripStage } from './respond.js';
import type { BlockStage, RiskStage } from './risk.js';
import { routeStage } from './route.js';

/**
 * The request path, top to bottom. Each phase is one file in this folder:
 *
 *   decode    decode.ts    Envoy's CheckRequest → CheckInput (server/checker.ts, before the stages)
 *   login     login.ts     the providers' callback and logout paths; its response phase
 *                          (loginResponse.ts) sends an anonymous caller that access denies to log in
 *   route     route.ts     the AccessPolicy that governs the request
 *   identify  identify.ts  who is calling (the methods in identity/ and login/sessionMethod.ts)
 *   blocked   risk.ts      a subject a RiskModel blocked is refused everywhere until the block ends
 *   access    access.ts    may they: the AccessPolicy's rules
 *   quota     quota.ts     are they within their QuotaPolicy limits (and, for a RiskModel,
 *                          the subject's behaviour observed in the same store call)
 *   risk      risk.ts      the RiskModel's score, and what its thresholds make of it
 *   strip     respond.ts   the client's copies of the headers the upstream trusts, removed
 *   respond   respond.ts   Decision → CheckResponse (server/checker.ts, after the stages)
 *
 * pipeline/pipeline.ts runs the stages between decode and respond in this order, then
 * their response phases. The stages that need dependencies are built by sidecar/wiring/.
 */
export function requestPath(built: {
  readonly login: LoginStage;
  readonly identify: IdentifyStage;
  readonly quota: QuotaStage;
  readonly blocked: BlockStage;
  readonly risk: RiskStage;
}): readonly Stage[] {
  return [
    built.login,
    routeStage,
    built.identify,
    built.blocked,
    accessStage,
    built.quota,
    built.risk,
    stripStage,
  ];
}
