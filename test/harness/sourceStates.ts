import type { SourceState } from '../../sidecar/config/source.js';
import { waitUntil } from './process.js';

/** Collects the states a configuration source delivers; `waitFor` answers with the first new one that matches and how long it took. */
export class StateRecorder {
  readonly states: SourceState[] = [];
  readonly onState = (s: SourceState) => this.states.push(s);

  get last(): SourceState {
    const s = this.states.at(-1);
    if (!s) throw new Error('no state delivered');
    return s;
  }

  /** Looks at the states delivered from index `from` on (by default: from now on). */
  async waitFor(
    match: (s: SourceState) => boolean,
    timeoutMs = 5000,
    from = this.states.length,
  ): Promise<{ state: SourceState; ms: number }> {
    let state: SourceState | undefined;
    const ms = await waitUntil(
      'a matching state',
      () => {
        state = this.states.slice(from).find(match);
        return state !== undefined;
      },
      timeoutMs,
      { intervalMs: 10 },
    ).catch((e: Error) => {
      throw new Error(`${e.message}; last: ${JSON.stringify(this.states.at(-1))}`);
    });
    return { state: state as SourceState, ms };
  }
}
