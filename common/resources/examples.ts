import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

export interface Example {
  readonly file: string;
  readonly object: Record<string, unknown>;
  /** For bad examples: the field and a part of the message the rejection must carry. */
  readonly expect?: { readonly field: string; readonly message: string };
}

/** Reads examples/ (good) or examples/bad/ (each file one object with an `# expect-error: field :: text` line). */
export function readExamples(dir: string): Example[] {
  const out: Example[] = [];
  for (const name of readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()) {
    const file = join(dir, name);
    const text = readFileSync(file, 'utf8');
    const m = /^# expect-error: (\S+) :: (.+)$/m.exec(text);
    for (const doc of parseAllDocuments(text)) {
      const object = doc.toJS() as Record<string, unknown> | null;
      if (!object) continue;
      out.push({ file, object, ...(m ? { expect: { field: m[1]!, message: m[2]!.trim() } } : {}) });
    }
  }
  return out;
}
