import { Counter, Histogram, type Registry } from 'prom-client';
import { v7 as uuidv7 } from 'uuid';
import type { Logger } from '../../common/logger.js';
import type { ICheckRequest, ICheckResponse } from '../../proto/envoy.js';
import type { DecisionAudit } from '../audit/decisionAudit.js';
import { AuditUnavailable } from '../audit/errors.js';
import { type ErrorCode, errorSpec } from '../errors.js';
import { pageRequestOf } from '../login/errorPages.js';
import { Pages } from '../login/pages.js';
import type { Pipeline } from '../pipeline/pipeline.js';
import type { Ctx } from '../pipeline/stage.js';
import type { Snapshot } from '../policy/snapshot.js';
import type { PolicyStore } from '../policy/store.js';
import type { CheckInput } from '../request/input.js';
import type { Decision } from '../request/outcome.js';
import { decodeCheckRequest, MalformedRequest } from '../stages/decode.js';
import { type BrowserView, denyResponse, toCheckResponse } from '../stages/respond.js';

/**
 * One Check, end to end: decode, run the pipeline against the snapshot in force, answer.
 * `check` never rejects and always resolves within the deadline: whatever goes wrong
 * becomes a deny with a code from errors.ts.
 */
export class Checker {
  readonly #checks: Counter<'decision' | 'code'>;
  readonly #seconds: Histogram<'decision'>;
  #stopped = false;
  #inFlight = 0;
  #idle: (() => void) | undefined;

  constructor(
    private readonly pipeline: Pipeline,
    private readonly policy: PolicyStore,
    private readonly deadlineMs: number,
    private readonly log: Logger,
    registry: Registry,
    /** The pages browsers get for a deny (title, logo, default page: sidecar settings). */
    private readonly pages = new Pages(),
    /** A check that gets another deadline than deadlineMs (a login callback); undefined: the usual. */
    private readonly deadlineFor: (input: CheckInput, snapshot: Snapshot) => number | undefined = () =>
      undefined,
    /** Where each decision becomes an audit event; none: no audit log. */
    private readonly audit?: DecisionAudit,
  ) {
    this.#checks = new Counter({
      name: 'nox_checks_total',
      help: 'Checks answered, by decision (allow, deny) and error code (ok for allows).',
      labelNames: ['decision', 'code'],
      registers: [registry],
    });
    this.#seconds = new Histogram({
      name: 'nox_check_duration_seconds',
      help: 'Time from receiving a Check to having its response, by decision.',
      labelNames: ['decision'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.25],
      registers: [registry],
    });
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Resolves once no check is in flight. Checks that arrive meanwhile are still decided: while
   * the gRPC server drains, a check on a stream it accepted before its GOAWAY reached the client
   * (Envoy) is one the policy may allow, and refusing it would deny a request during a rollout.
   */
  drain(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((res) => {
      this.#idle = res;
    });
  }

  /**
   * From now on every check is refused SHUTTING_DOWN: called once the gRPC server is closed and
   * before the stores close, so a straggler (a call the drain timeout cut off) is never decided
   * against a closed store, and never left hanging.
   */
  stop(): void {
    this.#stopped = true;
  }

  async check(req: ICheckRequest): Promise<ICheckResponse> {
    const started = performance.now();
    // Time-ordered (UUIDv7): the audit tables' primary key is (id, occurred_at), and a random v4
    // id would put every event's index entry on a random page of that index.
    const decisionId = uuidv7();
    this.#inFlight++;
    let response: ICheckResponse;
    let code: ErrorCode | 'ok';
    // Whether the client reads a page or JSON is the Accept header's call (respond.ts).
    const view: BrowserView = { pages: this.pages, request: pageRequestOf(req.attributes?.request?.http) };
    try {
      const decided = await this.#decide(req, decisionId);
      const decision = await this.#audited(decided, started);
      code = decision.allowed ? 'ok' : decision.deny.code;
      response = toCheckResponse(decision, view);
    } catch (cause) {
      // Unreachable by design (#decide catches); kept so a bug can never become an allow.
      this.log.error({ decisionId, err: String(cause) }, 'check failed outside the pipeline');
      code = 'INTERNAL';
      response = denyResponse({ code, reason: 'internal error' }, decisionId, view);
    } finally {
      this.#inFlight--;
      if (this.#inFlight === 0 && this.#idle) this.#idle();
    }
    const decision = code === 'ok' ? 'allow' : 'deny';
    this.#checks.inc({ decision, code: code === 'ok' ? 'ok' : errorSpec(code).metricLabel });
    this.#seconds.observe({ decision }, (performance.now() - started) / 1000);
    return response;
  }

  /**
   * The decision once its audit event is recorded as the mode asks (Durable: synced to the
   * spool). An event that cannot be recorded when the policy says none may be lost turns the
   * decision into a deny: the caller is refused rather than served unaudited.
   */
  async #audited(
    decided: { decision: Decision; input?: CheckInput; ctx?: Ctx },
    started: number,
  ): Promise<Decision> {
    if (!this.audit) return decided.decision;
    const refused = (e: unknown): Decision => {
      if (!(e instanceof AuditUnavailable)) throw e;
      this.log.warn(
        { decisionId: decided.decision.decisionId, err: e.message },
        'check refused: audit unavailable',
      );
      return {
        allowed: false,
        deny: { code: 'AUDIT_UNAVAILABLE', reason: e.message },
        decisionId: decided.decision.decisionId,
        snapshotVersion: decided.decision.snapshotVersion,
      };
    };
    try {
      const pending = this.audit.record({
        ...decided,
        startedAt: performance.timeOrigin + started,
        latencyUs: (performance.now() - started) * 1000,
      });
      if (pending) {
        // Within what is left of the check's deadline: a disk that does not answer is a deny.
        let timer: NodeJS.Timeout | undefined;
        const left = Math.max(1, this.deadlineMs - (performance.now() - started));
        await Promise.race([
          pending,
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new AuditUnavailable(`audit spool not synced within ${Math.round(left)} ms`)),
              left,
            );
          }),
        ]).finally(() => clearTimeout(timer));
      }
      return decided.decision;
    } catch (e) {
      return refused(e);
    }
  }

  async #decide(
    req: ICheckRequest,
    decisionId: string,
  ): Promise<{ decision: Decision; input?: CheckInput; ctx?: Ctx }> {
    // While the sidecar starts, a check waits for the first snapshot, within its deadline
    // (what the wait took is taken off the pipeline's time below).
    const waitStarted = performance.now();
    const snapshot =
      this.policy.current ?? (this.#stopped ? undefined : await this.policy.whenLoaded(this.deadlineMs));
    const waited = performance.now() - waitStarted;
    const deny = (code: ErrorCode, reason: string): { decision: Decision } => ({
      decision: {
        allowed: false,
        deny: { code, reason },
        decisionId,
        snapshotVersion: snapshot?.version ?? 0,
      },
    });
    if (this.#stopped) return deny('SHUTTING_DOWN', 'sidecar is shutting down');
    if (!snapshot) return deny('NOT_READY', 'no policy loaded');
    let input: ReturnType<typeof decodeCheckRequest>;
    try {
      input = decodeCheckRequest(req);
    } catch (e) {
      if (e instanceof MalformedRequest) return deny('MALFORMED_REQUEST', e.message);
      throw e;
    }
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const ms = Math.max(1, Math.round((this.deadlineFor(input, snapshot) ?? this.deadlineMs) - waited));
    const deadline = new Promise<Decision>((res) => {
      timer = setTimeout(() => {
        abort.abort();
        res(deny('DEADLINE_EXCEEDED', `no decision within ${ms} ms`).decision);
      }, ms);
    });
    const ctx: Ctx = { decisionId, snapshot, signal: abort.signal, now: Date.now() };
    try {
      const decision = await Promise.race([
        this.pipeline.run(input, ctx).catch((cause: unknown) => {
          this.log.error({ decisionId, err: String(cause) }, 'pipeline failed');
          return deny('INTERNAL', 'internal error').decision;
        }),
        deadline,
      ]);
      return { decision, input, ctx };
    } finally {
      clearTimeout(timer);
    }
  }
}
