import type { Revocations } from './revocations.js';

/** Standalone mode: revocations of this process only. */
export class MemoryRevocations implements Revocations {
  readonly #local = new Map<string, number>();
  isRevoked(id: string, now: number): boolean {
    const until = this.#local.get(id);
    return until !== undefined && until > now;
  }
  async revoke(id: string, untilMs: number): Promise<void> {
    this.#local.set(id, untilMs);
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
}
