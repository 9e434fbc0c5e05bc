import { Counter, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { errorSpec } from '../errors.js';
import type { CheckInput, Ctx, Decision, Outcome, Stage } from './types.js';

/**
 * Runs the stages in order: the first deny (or unrecoverable error) ends the check; an
 * allow needs every stage to continue or skip. Timing and metrics for all stages live
 * here, so a stage only decides.
 */
export class Pipeline {
  readonly #stageSeconds: Histogram<'stage'>;
  readonly #stageOutcomes: Counter<'stage' | 'outcome'>;

  constructor(
    private readonly stages: readonly Stage[],
    private readonly log: Logger,
    registry: Registry,
  ) {
    this.#stageSeconds = new Histogram({
      name: 'nox_stage_duration_seconds',
      help: 'Time spent in each stage of the decision path.',
      labelNames: ['stage'],
      buckets: [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
      registers: [registry],
    });
    this.#stageOutcomes = new Counter({
      name: 'nox_stage_outcomes_total',
      help: 'Outcomes per stage: continue, deny, skip, error, error_fail_open, dry_run_deny.',
      labelNames: ['stage', 'outcome'],
      registers: [registry],
    });
  }

  async run(input: CheckInput, ctx: Ctx): Promise<Decision> {
    const upstreamHeaders: Record<string, string> = {};
    const responseHeaders: Record<string, string> = {};
    const removeHeaders: string[] = [];
    const base = { decisionId: ctx.decisionId, snapshotVersion: ctx.snapshot.version };
    for (const stage of this.stages) {
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
          if (outcome.upstreamHeaders) Object.assign(upstreamHeaders, outcome.upstreamHeaders);
          if (outcome.responseHeaders) Object.assign(responseHeaders, outcome.responseHeaders);
          if (outcome.identity) ctx.identity = outcome.identity;
          if (outcome.removeUpstreamHeaders) removeHeaders.push(...outcome.removeUpstreamHeaders);
          break;
        case 'skip':
          this.#stageOutcomes.inc({ stage: stage.name, outcome: 'skip' });
          break;
        case 'deny':
          this.#stageOutcomes.inc({ stage: stage.name, outcome: 'deny' });
          return { ...base, allowed: false, deny: outcome.deny };
        case 'error': {
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
          if (failOpen) break;
          return {
            ...base,
            allowed: false,
            deny: { code: outcome.code, reason: `${stage.name}: ${errorSpec(outcome.code).metricLabel}` },
          };
        }
        default: {
          // A stage returned something outside the Outcome union: never an allow.
          const unknown: never = outcome;
          this.log.error(
            { decisionId: ctx.decisionId, stage: stage.name, outcome: unknown },
            'unknown outcome',
          );
          return {
            ...base,
            allowed: false,
            deny: { code: 'INTERNAL', reason: `${stage.name}: unknown outcome` },
          };
        }
      }
    }
    upstreamHeaders['x-nox-decision-id'] = ctx.decisionId;
    upstreamHeaders['x-nox-snapshot'] = String(ctx.snapshot.version);
    return { ...base, allowed: true, allow: { upstreamHeaders, responseHeaders, removeHeaders } };
  }
}

function describe(cause: unknown): string {
  return cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
}
