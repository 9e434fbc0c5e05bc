import { randomUUID } from 'node:crypto';
import { Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import type { ICheckRequest } from '../../proto/envoy.js';
import type { ConfigSource } from '../../sidecar/config/source.js';
import { errorSpec } from '../../sidecar/errors.js';
import { MemoryRevocations } from '../../sidecar/identity/memoryRevocations.js';
import { isSessionId } from '../../sidecar/login/sessionStore.js';
import { Pipeline } from '../../sidecar/pipeline/pipeline.js';
import type { Ctx } from '../../sidecar/pipeline/stage.js';
import type { CompiledQuotaPolicy } from '../../sidecar/policy/quotaPolicy.js';
import type { Snapshot } from '../../sidecar/policy/snapshot.js';
import { PolicyStore } from '../../sidecar/policy/store.js';
import type { QuotaStore } from '../../sidecar/quota/store.js';
import type { CheckInput } from '../../sidecar/request/input.js';
import { RiskModels } from '../../sidecar/risk/models.js';
import type { SecretStore } from '../../sidecar/secrets/secretStore.js';
import { loadSettings } from '../../sidecar/settings/settings.js';
import { decodeCheckRequest, MalformedRequest } from '../../sidecar/stages/decode.js';
import { requestPath } from '../../sidecar/stages/order.js';
import { QuotaStage } from '../../sidecar/stages/quota.js';
import { BlockStage, RiskStage } from '../../sidecar/stages/risk.js';
import { identifyStageFor } from '../../sidecar/wiring/identity.js';
import type { Kube } from '../../sidecar/wiring/kube.js';
import { loginFor } from '../../sidecar/wiring/login.js';
import type { RedisTargets } from '../../sidecar/wiring/redis.js';
import { PreviewQuotaStore } from './quotaPreview.js';
import { type RequestSpec, toCheckRequest } from './request.js';

/** What `kubectl nox explain` prints for one request (as JSON with -o json). */
export interface Explanation {
  readonly id: string;
  readonly request: { readonly method: string; readonly host: string; readonly path: string };
  /** The answer Envoy would get: allowed, or the deny's code and HTTP status. */
  readonly decision: {
    readonly allowed: boolean;
    /** "ok" for an allow, else the code of sidecar/errors.ts. */
    readonly code: string;
    readonly status: number;
    readonly reason?: string;
  };
  /** The AccessPolicy that governs the request ("namespace/name"), if one does. */
  readonly accessPolicy?: string;
  /** Its rule that decided ("default": its defaultAction). */
  readonly rule?: string;
  /** Who the request identifies as; null: anonymous; absent: identification did not finish. */
  readonly identity?: {
    readonly method: string;
    readonly provider: string;
    readonly subject: string;
    readonly groups: readonly string[];
  } | null;
  /** Every limit the quota stage would charge, per QuotaPolicy and tier. */
  readonly quota: readonly {
    readonly policy: string;
    readonly tier: string;
    readonly limit: string;
    readonly requests: number;
    /** Rolling window in seconds, or the calendar period's end. */
    readonly windowSeconds?: number;
    readonly resetsAt?: string;
    readonly cost: number;
    /** From the live counters (`--redis`); absent when they were not read. */
    readonly remaining?: number;
  }[];
  /** The first deny a DryRun policy would make (recorded by the sidecar, not enforced). */
  readonly wouldDeny?: { readonly code: string; readonly reason: string };
  /** What explain could not look at, so its answer assumes it (see `Explainer`). */
  readonly assumptions: readonly string[];
}

export interface ExplainerParts {
  /** Where the policies come from: the cluster (KubeSource) or files (FileSource). */
  readonly source: ConfigSource;
  /** Started (explain reads them, and stops them on close). */
  readonly secrets: SecretStore;
  /** For ServiceAccount tokens (TokenReview) and the cluster source; none: files only. */
  readonly kube?: Kube;
  /** The sidecars' quota store, read in dry-run mode; none: counters are not read. */
  readonly quota?: QuotaStore;
  readonly log: Logger;
}

/**
 * The sidecar's own request path, run on a request nobody sent: the same snapshot compiler,
 * stages, identity methods (JWKS and introspection are fetched as the sidecar would) and
 * error codes, so what explain says is what the sidecar decides. Three things live only in
 * the sidecars' stores and are not read, and each explanation says when it assumed them:
 * browser sessions (a session cookie is looked up in an empty store), revocations (none are
 * known), and quota counters unless the store is given (the charge is shown "if there is
 * room"). Nothing is charged, no session is created, no event is audited.
 */
export class Explainer {
  readonly #store: PolicyStore;
  readonly #pipeline: Pipeline;
  readonly #quota: PreviewQuotaStore;
  readonly #close: () => Promise<void>;

  private constructor(
    store: PolicyStore,
    pipeline: Pipeline,
    quota: PreviewQuotaStore,
    close: () => Promise<void>,
  ) {
    this.#store = store;
    this.#pipeline = pipeline;
    this.#quota = quota;
    this.#close = close;
  }

  static async open(parts: ExplainerParts): Promise<Explainer> {
    // Its own registry: the stages' metrics are required by their constructors, read by nobody.
    const registry = new Registry();
    const settings = loadSettings({});
    const store = new PolicyStore(parts.log, registry);
    await parts.source.start((state) => store.apply(state));
    // One reading is what a command needs: nothing is watched afterwards.
    await parts.source.stop();
    const login = await loginFor(settings, noRedis, parts.secrets, parts.log, registry);
    const quota = new PreviewQuotaStore(parts.quota);
    const riskModels = new RiskModels(parts.log, registry);
    const stages = requestPath({
      login: login.stage,
      identify: await identifyStageFor(
        settings,
        {
          kube: parts.kube,
          secrets: parts.secrets,
          revocations: new MemoryRevocations(),
          session: login.method,
          profiles: undefined,
          policy: store,
        },
        registry,
      ),
      quota: new QuotaStage(quota, registry),
      // The RiskModels' files are read where the command runs; one that is not there is
      // decided by its failureMode, as a sidecar without it would.
      // Blocks are live state of the sidecars, not policy: none is known here.
      blocked: new BlockStage(new MemoryRevocations(), registry),
      risk: new RiskStage(riskModels, quota, registry),
    });
    const snapshot = store.current;
    if (snapshot) for (const s of stages) s.onSnapshot?.(snapshot);
    if (snapshot) await riskModels.sync(snapshot.riskModels);
    const pipeline = new Pipeline(stages, parts.log, registry);
    return new Explainer(store, pipeline, quota, async () => {
      await login.close();
      await quota.close();
      await riskModels.close();
      await parts.secrets.stop();
    });
  }

  /** The snapshot explained against: its version, digest, and what it rejected. */
  get snapshot(): Snapshot | undefined {
    return this.#store.current;
  }

  async explain(request: RequestSpec | ICheckRequest, timeoutMs = 10_000): Promise<Explanation> {
    const req = isCheckRequest(request) ? request : toCheckRequest(request);
    const http = req.attributes?.request?.http;
    const id = http?.id ?? randomUUID();
    const shown = { method: http?.method ?? '', host: http?.host ?? '', path: http?.path ?? '' };
    const snapshot = this.#store.current;
    const denied = (code: string, reason: string): Explanation => ({
      id,
      request: shown,
      decision: { allowed: false, code, status: errorSpec(code as never).httpStatus, reason },
      quota: [],
      assumptions: [],
    });
    if (!snapshot) return denied('NOT_READY', 'no policy loaded');
    let input: CheckInput;
    try {
      input = decodeCheckRequest(req);
    } catch (e) {
      if (e instanceof MalformedRequest) return denied('MALFORMED_REQUEST', e.message);
      throw e;
    }
    const ctx: Ctx = { decisionId: id, snapshot, signal: AbortSignal.timeout(timeoutMs), now: Date.now() };
    this.#quota.takeCharges();
    const decision = await this.#pipeline.run(input, ctx);
    const charges = this.#quota.takeCharges();
    const code = decision.allowed ? 'ok' : decision.deny.code;
    return {
      id,
      request: { method: input.method, host: input.host, path: input.path },
      decision: decision.allowed
        ? { allowed: true, code, status: 200 }
        : {
            allowed: false,
            code,
            status: errorSpec(decision.deny.code).httpStatus,
            reason: decision.deny.reason,
          },
      ...(ctx.accessPolicy ? { accessPolicy: ctx.accessPolicy.key.slice('AccessPolicy/'.length) } : {}),
      ...(ctx.accessRule ? { rule: ctx.accessRule } : {}),
      ...identityOf(ctx),
      quota: this.#charged(input, ctx, charges),
      ...(ctx.wouldDeny ? { wouldDeny: { code: ctx.wouldDeny.code, reason: ctx.wouldDeny.reason } } : {}),
      assumptions: assumptions(input, ctx, snapshot, charges.length > 0, this.#quota.readsCounters),
    };
  }

  close(): Promise<void> {
    return this.#close();
  }

  /** The limits charged, named after their policy and tier (read back from the store keys the stage built). */
  #charged(
    input: CheckInput,
    ctx: Ctx,
    charges: ReturnType<PreviewQuotaStore['takeCharges']>,
  ): Explanation['quota'] {
    const byTag = new Map<string, CompiledQuotaPolicy>();
    for (const path of ctx.pathReadings ?? [input.path]) {
      for (const h of ctx.snapshot.quota.lookup(input.host, path, input.method))
        byTag.set(h.value.keyTag, h.value);
    }
    const out: Explanation['quota'][number][] = [];
    for (const c of charges) {
      c.checks.forEach((check, i) => {
        // nox:q:{<subject>}:<policy tag>:<tier or "override">:<limit>[:<period>]
        const [tag, tier, limit] = check.key.slice(check.key.indexOf('}:') + 2).split(':');
        const policy = byTag.get(tag ?? '');
        out.push({
          policy: policy ? policy.key.slice('QuotaPolicy/'.length) : (tag ?? ''),
          tier: tier ?? '',
          limit: limit ?? '',
          requests: check.requests,
          ...(check.windowMs !== undefined
            ? { windowSeconds: check.windowMs / 1000 }
            : { resetsAt: new Date(check.resetAt ?? 0).toISOString() }),
          cost: c.cost,
          ...(c.live ? { remaining: c.live.limits[i]?.remaining ?? 0 } : {}),
        });
      });
    }
    return out;
  }
}

/** The sidecar's session and quota stores are Redis; explain's are not (see Explainer). */
const noRedis: RedisTargets = () => {
  throw new Error('explain does not connect to the sidecars’ Redis for sessions');
};

function isCheckRequest(r: RequestSpec | ICheckRequest): r is ICheckRequest {
  return 'attributes' in r;
}

function identityOf(ctx: Ctx): Pick<Explanation, 'identity'> {
  const id = ctx.identity;
  if (id)
    return { identity: { method: id.method, provider: id.provider, subject: id.subject, groups: id.groups } };
  // Anonymous only once the identify stage has run: access (later) sets the rule.
  return ctx.accessRule !== undefined ? { identity: null } : {};
}

function assumptions(
  input: CheckInput,
  ctx: Ctx,
  snapshot: Snapshot,
  charged: boolean,
  countersRead: boolean,
): string[] {
  const out: string[] = [];
  const cookie = input.headers.cookie ?? '';
  if ([...cookie.matchAll(/=([^;\s]+)/g)].some((m) => isSessionId(m[1]!)))
    out.push('a session cookie was not looked up: sessions live in the sidecars’ store');
  if (ctx.identity) out.push(`${ctx.identity.subject} and the credential are assumed not revoked`);
  if (charged && !countersRead)
    out.push('the quota counters were not read: the charge is shown as if there is room');
  if (snapshot.rejected.length > 0)
    out.push(
      `${snapshot.rejected.length} resource(s) were rejected and do not take part: ${snapshot.rejected.map((r) => r.key).join(', ')}`,
    );
  return out;
}
