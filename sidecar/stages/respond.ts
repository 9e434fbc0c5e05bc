import { HeaderAppendAction, type ICheckResponse, type IHeaderValueOption } from '../../proto/envoy.js';
import { errorSpec, RpcCode } from '../errors.js';
import { errorPage, type PageRequest, prefersHtml } from '../login/errorPages.js';
import type { Pages } from '../login/pages.js';
import type { Ctx, Stage } from '../pipeline/stage.js';
import type { CheckInput } from '../request/input.js';
import type { Decision, Deny, Outcome } from '../request/outcome.js';

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

/** Nox's header namespace: no client header under it reaches the upstream. */
const noxPrefix = 'x-nox-';

/**
 * The client headers an allowed request must lose before the upstream sees it, unless Nox
 * sets them: every name in Nox's namespace the client sent, and every identity header name of
 * every AccessPolicy on the host (snapshot.identityHeaderNames), not only the routed one's.
 *
 * Envoy's headers_to_remove takes exact names, so the `x-nox-*` names are the ones present in
 * the CheckRequest (Envoy lower-cases them: `X-NoX-Roles` arrives as `x-nox-roles`). A name
 * spelled with underscores (`x_nox_roles`, `x_user`) is removed too: CGI-style upstreams
 * (PHP, WSGI, Rack) read `_` and `-` as one, so it would reach them as the protected header.
 */
export function clientHeadersToRemove(
  headers: Readonly<Record<string, string>>,
  hostNames: readonly string[],
): string[] {
  const out = [...hostNames];
  for (const raw in headers) {
    const name = raw.toLowerCase();
    const dashed = name.includes('_') ? name.replaceAll('_', '-') : name;
    if (dashed.startsWith(noxPrefix)) out.push(name);
    else if (dashed !== name && hostNames.includes(dashed)) out.push(name);
  }
  return out;
}

/**
 * The last stage of the request path: on a request every stage let through, the client's
 * copies of the headers the upstream trusts are removed (clientHeadersToRemove). Denied
 * requests never reach the upstream, so there is nothing to strip there.
 */
export const stripStage: Stage = {
  name: 'strip',
  run(input: CheckInput, ctx: Ctx): Outcome {
    return {
      kind: 'continue',
      removeUpstreamHeaders: clientHeadersToRemove(
        input.headers,
        ctx.snapshot.identityHeaderNames.forHost(input.host),
      ),
    };
  },
};

// Control characters: Envoy would refuse a value with CR, LF or NUL, and none of them belongs
// in a header. Identity values are checked where they are made (request/identityHeaders.ts);
// this is the last line for every header Nox sets upstream.
// biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
const controlChars = /[\u0000-\u001f\u007f]/;

/**
 * The page of a deny for a browser: the sidecar's Pages (title, logo, default page) and the
 * request's Accept, method and path (errorPages.pageRequestOf). Without it every deny is JSON.
 */
export interface BrowserView {
  readonly pages: Pages;
  readonly request: PageRequest & { readonly accept: string };
}

/** Decision → CheckResponse, as Envoy's ext_authz filter reads it. */
export function toCheckResponse(decision: Decision, view?: BrowserView): ICheckResponse {
  if (decision.allowed) {
    const set: Record<string, string> = {};
    const remove = new Set<string>(ownedUpstreamHeaders);
    for (const h of decision.allow.removeHeaders ?? []) remove.add(h.toLowerCase());
    for (const [name, value] of Object.entries(decision.allow.upstreamHeaders)) {
      const key = name.toLowerCase();
      // A value that cannot be sent is not sent, and the client's copy goes too.
      if (controlChars.test(value)) remove.add(key);
      else set[key] = value;
    }
    return {
      status: { code: RpcCode.OK },
      okResponse: {
        headers: headerOptions(set),
        headersToRemove: [...remove].filter((h) => !(h in set)),
        responseHeadersToAdd: headerOptions(decision.allow.responseHeaders),
      },
    };
  }
  return denyResponse(decision.deny, decision.decisionId, view);
}

/**
 * A deny's answer: the body Nox built for it (the chooser, a login failure's page), else for a
 * client that prefers HTML (errorPages.prefersHtml) a page saying what happened in plain words
 * with a link to retry and nothing internal (no namespace, resource, rule or reason), else the
 * JSON error API clients read. A redirect keeps its short JSON body: browsers never show it.
 */
export function denyResponse(deny: Deny, decisionId: string, view?: BrowserView): ICheckResponse {
  const spec = errorSpec(deny.code);
  const page =
    deny.body === undefined &&
    view !== undefined &&
    (spec.httpStatus < 300 || spec.httpStatus >= 400) &&
    prefersHtml(view.request.accept)
      ? errorPage(view.pages, deny.code, decisionId, view.request, {
          retryAfter: deny.headers?.['retry-after'],
        })
      : undefined;
  const body =
    page?.body ?? deny.body ?? JSON.stringify({ error: deny.code, reason: deny.reason, decisionId });
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
        ...page?.headers,
      }),
      body,
    },
  };
}
