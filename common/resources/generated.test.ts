import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generatedFiles } from '../../scripts/gen-resources.js';
import { repoRoot } from '../../test/harness/tools.js';

// crds/ and types.gen.ts are generated from the kind definitions; editing either by hand,
// or changing a kind without `make generate`, fails here.
describe('generated resource files', () => {
  for (const [rel, content] of generatedFiles()) {
    it(`${rel} matches its source`, () => {
      let current = '';
      try {
        current = readFileSync(join(repoRoot, rel), 'utf8');
      } catch {
        /* missing: reported by the comparison */
      }
      expect(current === content, `${rel} is out of date: run \`make generate\``).toBe(true);
    });
  }
});
