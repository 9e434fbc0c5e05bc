import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { allConditionReasons, type ConditionReason, conditionReasons } from './reasons.js';

const operatorDir = dirname(fileURLToPath(import.meta.url));

/** The operator's source files (tests excluded: they may write made-up reasons on purpose). */
function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') ? [path] : [];
  });
}

/** Every `reason: 'CamelCase'` literal in the operator's sources, with where it stands. */
function writtenReasons(): { reason: string; at: string }[] {
  return sourceFiles(operatorDir).flatMap((file) =>
    [...readFileSync(file, 'utf8').matchAll(/\breason:\s*['"`]([A-Z][A-Za-z0-9]*)['"`]/g)].map((m) => ({
      reason: m[1]!,
      at: relative(operatorDir, file),
    })),
  );
}

describe('condition reasons', () => {
  it('are CamelCase, documented, and say which conditions carry them with which status', () => {
    for (const reason of allConditionReasons) {
      const spec = conditionReasons[reason];
      expect(reason, reason).toMatch(/^[A-Z][A-Za-z0-9]*$/);
      expect(spec.doc.length, reason).toBeGreaterThan(30);
      expect(Object.keys(spec.on).length, reason).toBeGreaterThan(0);
      for (const status of Object.values(spec.on)) expect(['True', 'False']).toContain(status);
    }
  });

  it('include every reason the operator writes', () => {
    const written = writtenReasons();
    // The scan must see the cluster reconcilers and the policy checks, or it proves nothing.
    expect(written.map((w) => w.at)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^postgres\//),
        expect.stringMatching(/^redis\//),
        expect.stringMatching(/^policies\//),
      ]),
    );
    const unknown = written.filter((w) => !(w.reason in conditionReasons));
    expect(unknown).toEqual([]);
  });

  it('has no row the operator never writes', () => {
    const sources = sourceFiles(operatorDir)
      .filter((f) => !f.endsWith('reasons.ts'))
      .map((f) => readFileSync(f, 'utf8'))
      .join('\n');
    const unused = allConditionReasons.filter((r) => !new RegExp(`['"\`]${r}['"\`]`).test(sources));
    expect(unused).toEqual([]);
  });

  it('is closed at the type level: a reason outside the list does not compile', () => {
    const known: ConditionReason = 'PrimaryUnavailable';
    // @ts-expect-error 'NoSuchReason' is not a ConditionReason (tsc fails if it ever becomes one)
    const unknown: ConditionReason = 'NoSuchReason';
    expect(conditionReasons[known].doc).toBeTruthy();
    expect(unknown in conditionReasons).toBe(false);
  });
});
