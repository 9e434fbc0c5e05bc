import { HeaderAppendAction, type ICheckResponse, type IHeaderValueOption } from '../../proto/envoy.js';
import { errorSpec, RpcCode } from '../errors.js';
import type { Decision, Deny } from '../request/outcome.js';

const overwrite = HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD;

function headerOptions(headers: Readonly<Record<string, string>>): IHeaderValueOption[] {
  const out: IHeaderValueOption[] = [];
  for (const key in headers) out.push({ header: { key, value: headers[key] }, appendAction: overwrite });
  return out;
}

/**
 * Headers the upstream trusts because Nox sets them. A client's own copy is always
 * replaced (when Nox sets the header) or removed (when it does not).
 */
export const ownedUpstreamHeaders = [
  'x-nox-decision-id',
  'x-nox-snapshot',
  'x-nox-user',
  'x-nox-provider',
  'x-nox-email',
  'x-nox-groups',
  'x-nox-tier',
  'x-nox-quota-remaining',
  'x-nox-access-rule',
  'x-nox-risk',
];

/** Decision → CheckResponse, as Envoy's ext_authz filter reads it. */
export function toCheckResponse(decision: Decision): ICheckResponse {
  if (decision.allowed) {
    return {
      status: { code: RpcCode.OK },
      okResponse: {
        headers: headerOptions(decision.allow.upstreamHeaders),
        headersToRemove: [
          ...new Set([...ownedUpstreamHeaders, ...(decision.allow.removeHeaders ?? [])]),
        ].filter((h) => !(h in decision.allow.upstreamHeaders)),
        responseHeadersToAdd: headerOptions(decision.allow.responseHeaders),
      },
    };
  }
  return denyResponse(decision.deny, decision.decisionId);
}

export function denyResponse(deny: Deny, decisionId: string): ICheckResponse {
  const spec = errorSpec(deny.code);
  const body = deny.body ?? JSON.stringify({ error: deny.code, reason: deny.reason, decisionId });
  return {
    status: { code: spec.rpcCode, message: deny.code },
    deniedResponse: {
      status: { code: spec.httpStatus },
      headers: headerOptions({
        'content-type': 'application/json',
        'cache-control': 'no-store',
        'x-nox-error': deny.code,
        'x-nox-decision-id': decisionId,
        ...deny.headers,
      }),
      body,
    },
  };
}
