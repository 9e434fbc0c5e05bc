import { Counter, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { errorSpec } from '../errors.js';
import type { CheckInput } from '../request/input.js';
import type { Decision, Deny, Outcome } from '../request/outcome.js';
import type { Ctx, Stage } from './stage.js';

/** The Allow a check builds up as its stages continue. */
interface Building {
  readonly upstreamHeaders: Record<string, string>;
  readonly responseHeaders: Record<string, string>;
  readonly removeHeaders: string[];
}

/**
 * Runs the stages in order: the first deny (or unrecoverable error) ends the check; an
 * allow needs every stage to continue or skip. Then the response phase: each stage with a
 * `respond` may add to the answer or replace a deny (login's redirects and cookies).
 * Timing and metrics for all stages live here, so a stage only decides.
 */
export class Pipeline {
  readonly #stageSeconds: Histogram<'stage'>;
  readonly #stageOutcomes: Counter<'stage' | 'outcome'>;
  /** The stages with a response phase, found once rather than per check. */
  readonly #responders: readonly Stage[];

  constructor(
    private readonly stages: readonly Stage[],
    private readonly log: Logger,
    registry: Registry,
  ) {
    this.#responders = stages.filter((s) => s.respond !== undefined);
    this.#stageSeconds = new Histogram({
      name: 'nox_stage_duration_seconds',
      help: 'Time spent in each stage of the decision path.',
      labelNames: ['stage'],
      buckets: [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
      registers: [registry],
    });
    this.#stageOutcomes = new Counter({
      name: 'nox_stage_outcomes_total',
      help: "Outcomes per stage: continue, deny, skip, error, error_fail_open, dry_run_deny, abandoned (the check's deadline had passed: the stage did not run).",
      labelNames: ['stage', 'outcome'],
      registers: [registry],
    });
  }

  async run(input: CheckInput, ctx: Ctx): Promise<Decision> {
    const allow: Building = { upstreamHeaders: {}, responseHeaders: {}, removeHeaders: [] };
    let deny: Deny | undefined;
    stages: for (const stage of this.stages) {
      // Envoy already has its answer (the deadline's deny): later stages must not act on a
      // request that was refused (charge its quota, create its session).
      if (ctx.signal.aborted) return this.#abandoned(stage, ctx);
      const started = performance.now();
      let outcome: Outcome;
      try {
        const r = stage.run(input, ctx);
        outcome = r instanceof Promise ? await r : r;
      } catch (cause) {
        outcome = { kind: 'error', code: 'INTERNAL', cause };
      }
      this.#stageSeconds.observe({ stage: stage.name }, (performance.now() - started) / 1000);
      switch (outcome.kind) {
        case 'continue':
          if (outcome.dryRunDeny) {
            ctx.wouldDeny ??= outcome.dryRunDeny;
            this.#stageOutcomes.inc({ stage: stage.name, outcome: 'dry_run_deny' });
            this.log.info(
              {
                decisionId: ctx.decisionId,
                stage: stage.name,
                code: outcome.dryRunDeny.code,
                reason: outcome.dryRunDeny.reason,
              },
              'dry run: would deny',
            );
          } else this.#stageOutcomes.inc({ stage: stage.name, outcome: 'continue' });
          add(allow, outcome, ctx);
          break;
        case 'skip':
          this.#stageOutcomes.inc({ stage: stage.name, outcome: 'skip' });
          break;
        case 'deny':
          this.#stageOutcomes.inc({ stage: stage.name, outcome: 'deny' });
          deny = outcome.deny;
          break stages;
        case 'error':
          deny = this.#failed(stage, outcome, ctx);
          if (deny) break stages;
          break;
        default: {
          // A stage returned something outside the Outcome union: never an allow.
          const unknown: never = outcome;
          this.log.error(
            { decisionId: ctx.decisionId, stage: stage.name, outcome: unknown },
            'unknown outcome',
          );
          deny = { code: 'INTERNAL', reason: `${stage.name}: unknown outcome` };
          break stages;
        }
      }
    }
    if (ctx.signal.aborted) return this.#abandoned(undefined, ctx);
    for (const stage of this.#responders) {
      let outcome: Outcome | undefined;
      try {
        const r = stage.respond!(input, ctx, deny);
        outcome = r instanceof Promise ? await r : r;
      } catch (cause) {
        outcome = { kind: 'error', code: 'INTERNAL', cause };
      }
      if (outcome === undefined) continue;
      if (outcome.kind === 'deny') deny = outcome.deny;
      else if (outcome.kind === 'error') deny = this.#failed(stage, outcome, ctx) ?? deny;
      else if (outcome.kind === 'continue' && deny === undefined) add(allow, outcome, ctx);
    }
    const decided = { decisionId: ctx.decisionId, snapshotVersion: ctx.snapshot.version };
    if (deny) return { ...decided, allowed: false, deny };
    allow.upstreamHeaders['x-nox-decision-id'] = ctx.decisionId;
    allow.upstreamHeaders['x-nox-snapshot'] = String(ctx.snapshot.version);
    return { ...decided, allowed: true, allow };
  }

  /** The check's deadline passed before `stage` (undefined: before the response phase) ran. */
  #abandoned(stage: Stage | undefined, ctx: Ctx): Decision {
    const where = stage ? `before stage ${stage.name}` : 'before the response phase';
    this.#stageOutcomes.inc({ stage: stage?.name ?? 'respond', outcome: 'abandoned' });
    return {
      decisionId: ctx.decisionId,
      snapshotVersion: ctx.snapshot.version,
      allowed: false,
      deny: { code: 'DEADLINE_EXCEEDED', reason: `the deadline passed ${where}; nothing after it ran` },
    };
  }

  /** A stage could not decide: logged and counted; a deny unless it is allowed to fail open. */
  #failed(stage: Stage, outcome: Extract<Outcome, { kind: 'error' }>, ctx: Ctx): Deny | undefined {
    const failOpen = outcome.failOpen === true;
    this.#stageOutcomes.inc({ stage: stage.name, outcome: failOpen ? 'error_fail_open' : 'error' });
    this.log.error(
      {
        decisionId: ctx.decisionId,
        stage: stage.name,
        code: outcome.code,
        failOpen,
        err: describe(outcome.cause),
      },
      'stage failed',
    );
    if (failOpen) return undefined;
    return { code: outcome.code, reason: `${stage.name}: ${errorSpec(outcome.code).metricLabel}` };
  }
}

function add(allow: Building, outcome: Extract<Outcome, { kind: 'continue' }>, ctx: Ctx): void {
  if (outcome.upstreamHeaders) Object.assign(allow.upstreamHeaders, outcome.upstreamHeaders);
  if (outcome.responseHeaders) Object.assign(allow.responseHeaders, outcome.responseHeaders);
  if (outcome.identity) ctx.identity = outcome.identity;
  if (outcome.removeUpstreamHeaders) allow.removeHeaders.push(...outcome.removeUpstreamHeaders);
}

function describe(cause: unknown): string {
  return cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
}
