import type { LoadResult } from '../lib/measure.js';
import { allow } from './allow.js';
import { audit } from './audit.js';
import { jwt } from './jwt.js';
import { quota } from './quota.js';
import { risk } from './risk.js';

export interface Scenario {
  readonly name: string;
  readonly describe: string;
  run(opts: { durationS: number; concurrency: number }): Promise<LoadResult[]>;
}

/** Every scenario `make bench` knows; later work adds its own here. */
export const scenarios: readonly Scenario[] = [allow, quota, jwt, audit, risk];
