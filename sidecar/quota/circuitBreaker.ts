export class CircuitOpenError extends Error {
  override readonly name = 'CircuitOpenError';
  constructor() {
    super('circuit open: the dependency failed repeatedly; not calling it until the cooldown ends');
  }
}

/**
 * Closed: calls go through. After `failureThreshold` consecutive failures: open, calls fail
 * at once for `openMs`. Then half-open: one trial call; success closes, failure reopens.
 */
export class CircuitBreaker {
  #failures = 0;
  #openedAt = 0;
  #trial = false;
  #state: 'closed' | 'open' | 'half-open' = 'closed';

  constructor(
    private readonly opts: {
      failureThreshold: number;
      openMs: number;
      now?: () => number;
      /** Called each time the circuit opens (closed or half-open → open). */
      onOpen?: () => void;
    },
  ) {}

  get state(): 'closed' | 'open' | 'half-open' {
    return this.#state;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const now = (this.opts.now ?? Date.now)();
    if (this.#state === 'open') {
      if (now - this.#openedAt < this.opts.openMs || this.#trial) throw new CircuitOpenError();
      this.#state = 'half-open';
    }
    if (this.#state === 'half-open') {
      if (this.#trial) throw new CircuitOpenError();
      this.#trial = true;
    }
    try {
      const v = await fn();
      this.#failures = 0;
      this.#state = 'closed';
      return v;
    } catch (e) {
      this.#failures++;
      if (this.#state === 'half-open' || this.#failures >= this.opts.failureThreshold) {
        // Calls in flight when the circuit opened fail too; only the first one opens it.
        if ((this.#state as string) !== 'open') this.opts.onOpen?.();
        this.#state = 'open';
        this.#openedAt = (this.opts.now ?? Date.now)();
      }
      throw e;
    } finally {
      this.#trial = false;
    }
  }
}
