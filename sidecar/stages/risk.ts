import { Counter, Histogram, type Registry } from 'prom-client';
import type { RiskModelSpec } from '../../common/resources/types.gen.js';
import type { Revocations } from '../identity/revocations.js';
import { durationMs } from '../login/providers.js';
import type { Ctx, Stage } from '../pipeline/stage.js';
import type { Snapshot } from '../policy/snapshot.js';
import type { QuotaStore } from '../quota/store.js';
import { sourceIpPart, subjectHash } from '../quota/subject.js';
import type { CheckInput } from '../request/input.js';
import type { Deny, Outcome } from '../request/outcome.js';
import { RiskBatcher } from '../risk/batcher.js';
import { featureRecord, featureRow } from '../risk/features.js';
import type { RiskModels } from '../risk/models.js';
import { routeOf, type SubjectObservation } from '../risk/subjectFeatures.js';

/**
 * The risk subject's hash tag: the caller's, as a QuotaPolicy counting per User keys it (so
 * the quota stage can observe it in the same store call), or, for an anonymous caller, its
 * source address's. Undefined: nobody to keep a history for.
 */
export function riskTag(input: CheckInput, ctx: Ctx): string | undefined {
  // A SHA-256 otherwise asked for up to three times per check (block list, observation,
  // block): kept per identity, which is cached with its token and so comes back check after
  // check, and per check for an anonymous caller.
  const key: object = ctx.identity ?? ctx;
  if (tags.has(key)) return tags.get(key);
  let tag: string | undefined;
  if (ctx.identity) tag = subjectHash([`User=${ctx.identity.subject}`]);
  else {
    const ip = sourceIpPart(input.sourceAddress);
    tag = ip ? subjectHash([`SourceIP=${ip}`]) : undefined;
  }
  tags.set(key, tag);
  return tag;
}
const tags = new WeakMap<object, string | undefined>();

/** What the store records of this request for the subject's risk state. */
export function riskObservation(input: CheckInput, ctx: Ctx): SubjectObservation | undefined {
  const tag = riskTag(input, ctx);
  if (!tag) return undefined;
  return {
    tag,
    sourceIp: input.sourceAddress,
    userAgent: input.headers['user-agent'] ?? '',
    route: routeOf(input.method, input.path),
  };
}

/** The block list's id of a risk subject (the revocation list carries it: identity/revocations.ts). */
export const blockId = (tag: string) => `block:${tag}`;

/**
 * Refuses a subject a RiskModel blocked (a score at its block threshold), on every route and
 * every sidecar, until the block ends: it runs right after identify, so a blocked subject is
 * neither charged quota nor scored again. The list is the revocation list: an answer from
 * memory, every sidecar told within about a second.
 */
export class BlockStage implements Stage {
  readonly name = 'blocked';
  readonly #refused: Counter;

  constructor(
    private readonly blocks: Revocations,
    registry: Registry,
  ) {
    this.#refused = new Counter({
      name: 'nox_risk_blocked_checks_total',
      help: 'Checks refused because a RiskModel had put their subject on the block list.',
      registers: [registry],
    });
  }

  run(input: CheckInput, ctx: Ctx): Outcome {
    const tag = riskTag(input, ctx);
    if (!tag || !this.blocks.isRevoked(blockId(tag), ctx.now)) return { kind: 'skip' };
    this.#refused.inc();
    return {
      kind: 'deny',
      deny: { code: 'RISK_DENIED', reason: 'blocked after a risk score at a RiskModel’s block threshold' },
    };
  }
}

/** The refusals that count as a subject's failures. */
const FAILURES: ReadonlySet<string> = new Set(['UNAUTHENTICATED', 'ACCESS_DENIED', 'LOGIN_FAILED']);

/** A subject with no history (no tag): what its first request would show. */
const firstRequest = {
  perMinute: 1,
  perHour: 1,
  distinctIps: 0,
  newUserAgent: 1,
  newRoute: 1,
  failures: 0,
} as const;

/**
 * The RiskModel's score of the request and what its thresholds make of it: below challenge
 * allow; challenge: a step-up (401, RFC 9470 insufficient_user_authentication); deny and
 * block: 403 with the score. The subject's features come from the quota stage's store call
 * when it observed them, else from a store call of this stage's own (one round trip either
 * way). DryRun records the would-be decision and allows. A model that is not loaded, a
 * feature this sidecar cannot compute, or a failed inference is an error: the RiskModel's
 * failureMode decides.
 */
export class RiskStage implements Stage {
  readonly name = 'risk';
  readonly #scores: Histogram<'model'>;
  readonly #actions: Counter<'model' | 'action' | 'mode'>;
  readonly #failures: Counter<'model' | 'reason'>;
  readonly #batchSizes: Histogram<'model'>;
  readonly #stepUps: Counter<'model'>;
  readonly #inferenceSeconds: Histogram<'model'>;
  /** One batcher per RiskModel, with its spec's batch settings, made again when they change. */
  #batchers = new Map<string, { spec: RiskModelSpec['batch']; batcher: RiskBatcher }>();

  constructor(
    private readonly models: RiskModels,
    private readonly store: QuotaStore,
    registry: Registry,
    /** Where a block goes (the revocation list); none: a block is only a deny. */
    private readonly blocks?: Revocations,
  ) {
    this.#scores = new Histogram({
      name: 'nox_risk_score',
      help: 'Risk scores per RiskModel (namespace/name).',
      labelNames: ['model'],
      buckets: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99],
      registers: [registry],
    });
    this.#actions = new Counter({
      name: 'nox_risk_decisions_total',
      help: 'Risk decisions per RiskModel: allow, challenge, deny, block; mode DryRun when not enforced.',
      labelNames: ['model', 'action', 'mode'],
      registers: [registry],
    });
    this.#failures = new Counter({
      name: 'nox_risk_failures_total',
      help: 'Checks a RiskModel could not score, by reason (model_not_loaded, store, inference), and failures of its side work (block_list, failure_record).',
      labelNames: ['model', 'reason'],
      registers: [registry],
    });
    this.#stepUps = new Counter({
      name: 'nox_risk_step_ups_total',
      help: 'Checks at a RiskModel’s challenge threshold allowed because the token shows the fresh authentication (and acr) the challenge asks for.',
      labelNames: ['model'],
      registers: [registry],
    });
    this.#batchSizes = new Histogram({
      name: 'nox_risk_batch_size',
      help: 'Rows per inference, per RiskModel.',
      labelNames: ['model'],
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers: [registry],
    });
    this.#inferenceSeconds = new Histogram({
      name: 'nox_risk_inference_seconds',
      help: 'Time from a batch starting to its scores, per RiskModel: onnxruntime-node runs inference on the event loop after a setImmediate, so this includes the wait for the loop (a busy sidecar shows more here than the model costs).',
      labelNames: ['model'],
      buckets: [0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01],
      registers: [registry],
    });
  }

  /** Subjects' refused checks not yet written to the store (tag → count). */
  #failed = new Map<string, number>();
  #flushing: NodeJS.Timeout | undefined;
  /** Whether a RiskModel in force reads recentFailures15m: else nothing is recorded. */
  #countsFailures = false;

  /**
   * The response phase: a check refused for its credentials or its access is a failure of its
   * subject (the recentFailures15m feature). Written in batches, off the check's path: a
   * quarter of a second later, one store call per subject.
   */
  respond(input: CheckInput, ctx: Ctx, deny: Deny | undefined): undefined {
    if (!deny || !this.#countsFailures || !FAILURES.has(deny.code)) return undefined;
    const tag = riskTag(input, ctx);
    if (!tag) return undefined;
    this.#failed.set(tag, (this.#failed.get(tag) ?? 0) + 1);
    this.#flushing ??= setTimeout(() => this.#flushFailures(), 250).unref();
    return undefined;
  }

  #flushFailures(): void {
    this.#flushing = undefined;
    const counts = this.#failed;
    this.#failed = new Map();
    this.store.recordFailures?.(counts, Date.now()).catch(() => {
      // Best effort: lost failures make a subject look a little better for 15 minutes.
      this.#failures.inc({ model: '', reason: 'failure_record' }, counts.size);
    });
  }

  /** Loads the new snapshot's models in the background; until one loads, the previous serves. */
  onSnapshot(snapshot: Snapshot): void {
    this.#countsFailures = snapshot.riskModels.some((m) => m.spec.features.includes('recentFailures15m'));
    const keys = new Set(snapshot.riskModels.map((m) => m.key));
    for (const key of this.#batchers.keys()) if (!keys.has(key)) this.#batchers.delete(key);
    void this.models.sync(snapshot.riskModels);
  }

  #batcher(key: string, spec: RiskModelSpec): RiskBatcher {
    const b = this.#batchers.get(key);
    if (b && b.spec === spec.batch) return b.batcher;
    const model = key.slice('RiskModel/'.length);
    const batcher = new RiskBatcher({
      maxSize: spec.batch?.maxSize ?? 32,
      maxDelayMs: durationMs(spec.batch?.maxDelay ?? '1ms'),
      metrics: {
        ran: (_m, size, seconds) => {
          this.#batchSizes.observe({ model }, size);
          this.#inferenceSeconds.observe({ model }, seconds);
        },
        failed: () => {},
      },
    });
    this.#batchers.set(key, { spec: spec.batch, batcher });
    return batcher;
  }

  async run(input: CheckInput, ctx: Ctx): Promise<Outcome> {
    const ref = ctx.riskModel;
    if (!ref) return { kind: 'skip' };
    const model = ref.key.slice('RiskModel/'.length);
    const failed = (reason: string, cause: unknown): Outcome => {
      this.#failures.inc({ model, reason });
      return { kind: 'error', code: 'RISK_UNAVAILABLE', cause, failOpen: ref.spec.failureMode === 'Open' };
    };
    const session = this.models.session(ref.key);
    if (!session)
      return failed('model_not_loaded', this.models.problem(ref.key) ?? new Error('model not loaded yet'));

    let subject = ctx.subjectFeatures;
    if (!subject) {
      const observe = riskObservation(input, ctx);
      if (observe) {
        try {
          subject = (await this.store.take([], 0, ctx.now, false, ctx.signal, observe)).features;
        } catch (e) {
          return failed('store', e);
        }
      }
    }
    const row = featureRow(ref.spec.features, {
      subject: subject ?? firstRequest,
      method: input.method,
      anonymous: !ctx.identity,
      now: ctx.now,
    });
    let score: number;
    try {
      score = await this.#batcher(ref.key, ref.spec).score(session, row);
    } catch (e) {
      return failed('inference', e);
    }
    const t = ref.spec.thresholds;
    const action =
      score >= t.block ? 'block' : score >= t.deny ? 'deny' : score >= t.challenge ? 'challenge' : 'allow';
    ctx.risk = { score, action, features: featureRecord(ref.spec.features, row) };
    this.#scores.observe({ model }, score);
    this.#actions.inc({ model, action, mode: ref.spec.mode });
    if (action === 'allow') return { kind: 'continue' };
    // RFC 9470: a caller that has just authenticated again, as the challenge asks, passes it.
    if (action === 'challenge' && steppedUp(ctx, ref.spec)) {
      this.#stepUps.inc({ model });
      return { kind: 'continue' };
    }
    const deny = riskDeny(action, score, model, ref.spec);
    if (ref.spec.mode === 'DryRun') return { kind: 'continue', dryRunDeny: deny };
    const tag = action === 'block' ? riskTag(input, ctx) : undefined;
    if (tag && this.blocks) {
      const until = ctx.now + durationMs(ref.spec.blockDuration ?? '15m');
      // Announced in the background: this check is denied either way; a block that could not
      // be stored is counted and logged by the list, and the next such score tries again.
      this.blocks
        .revoke(blockId(tag), until)
        .catch(() => this.#failures.inc({ model, reason: 'block_list' }));
    }
    return { kind: 'deny', deny };
  }
}

/** What the challenge asks for: an authentication at most maxAge old, of one of acrValues. */
export function stepUpOf(spec: RiskModelSpec): { maxAgeS: number; acrValues: readonly string[] } {
  return {
    maxAgeS: Math.floor(durationMs(spec.stepUp?.maxAge ?? '5m') / 1000),
    acrValues: spec.stepUp?.acrValues ?? [],
  };
}

/**
 * Whether the caller's token shows the step-up: its auth_time (seconds) within maxAge (and
 * not ahead of this clock by more than a minute), and its acr one of acrValues when set.
 */
function steppedUp(ctx: Ctx, spec: RiskModelSpec): boolean {
  const claims = ctx.identity?.claims;
  const authTime = claims?.auth_time;
  if (typeof authTime !== 'number') return false;
  const { maxAgeS, acrValues } = stepUpOf(spec);
  const ageS = ctx.now / 1000 - authTime;
  if (ageS > maxAgeS || ageS < -60) return false;
  return acrValues.length === 0 || (typeof claims?.acr === 'string' && acrValues.includes(claims.acr));
}

function riskDeny(
  action: 'challenge' | 'deny' | 'block',
  score: number,
  model: string,
  spec: RiskModelSpec,
): Deny {
  const shown = score.toFixed(3);
  if (action === 'challenge') {
    const { maxAgeS, acrValues } = stepUpOf(spec);
    // RFC 9470 §3: authenticate again, at most max_age ago, with one of acr_values.
    const acr = acrValues.length > 0 ? `, acr_values="${acrValues.join(' ')}"` : '';
    return {
      code: 'RISK_CHALLENGE',
      reason: `risk ${shown} (RiskModel ${model}) asks for a fresh authentication`,
      headers: {
        'www-authenticate': `Bearer error="insufficient_user_authentication", error_description="A fresh authentication is required", max_age=${maxAgeS}${acr}`,
      },
    };
  }
  return { code: 'RISK_DENIED', reason: `risk ${shown} (RiskModel ${model}) is at its ${action} threshold` };
}
