import { readFile } from 'node:fs/promises';
import type { Counter, Gauge, Registry } from 'prom-client';
import { Counter as PromCounter, Gauge as PromGauge } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { compile } from './compile.js';
import type { Snapshot } from './snapshot.js';

/**
 * Holds the snapshot in force. A reload that fails keeps the last good snapshot and is
 * counted and logged; there is no partially applied configuration.
 */
export class PolicyStore {
  #current: Snapshot | undefined;
  #version = 0;
  readonly #loads: Counter<'result'>;
  readonly #versionGauge: Gauge;

  constructor(
    private readonly log: Logger,
    registry: Registry,
  ) {
    this.#loads = new PromCounter({
      name: 'nox_policy_loads_total',
      help: 'Policy (re)loads by result: ok, or error (the previous snapshot stays in force).',
      labelNames: ['result'],
      registers: [registry],
    });
    this.#versionGauge = new PromGauge({
      name: 'nox_policy_snapshot_version',
      help: 'Version of the policy snapshot in force (0: none loaded).',
      registers: [registry],
    });
    this.#versionGauge.set(0);
  }

  get current(): Snapshot | undefined {
    return this.#current;
  }

  /** Compiles `source`; on success swaps it in and returns it, otherwise returns the error. */
  apply(source: string, origin: string): Snapshot | Error {
    try {
      const next = compile(source, this.#version + 1);
      this.#version = next.version;
      this.#current = next;
      this.#loads.inc({ result: 'ok' });
      this.#versionGauge.set(next.version);
      this.log.info({ origin, version: next.version, digest: next.digest }, 'policy snapshot loaded');
      return next;
    } catch (e) {
      this.#loads.inc({ result: 'error' });
      this.log.error(
        { origin, err: (e as Error).message, keptVersion: this.#current?.version ?? 0 },
        'policy rejected; previous snapshot stays in force',
      );
      return e as Error;
    }
  }

  async loadFile(path: string): Promise<Snapshot | Error> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      this.#loads.inc({ result: 'error' });
      this.log.error({ origin: path, err: (e as Error).message }, 'policy file unreadable');
      return e as Error;
    }
    return this.apply(text, path);
  }
}
