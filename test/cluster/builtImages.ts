import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../harness/tools.js';

/** What scripts/images.sh built: each image's name, reference and OCI archive. */
export interface BuiltImage {
  readonly name: string;
  readonly ref: string;
  readonly archive: string;
}

/** Read once per file: a later partial build rewrites the index. */
let built: readonly BuiltImage[] | undefined;
export function builtImages(): readonly BuiltImage[] {
  built ??= (
    JSON.parse(readFileSync(join(repoRoot, '.run', 'images', 'index.json'), 'utf8')) as {
      images: BuiltImage[];
    }
  ).images;
  return built;
}

export function imageRef(name: string): string {
  const found = builtImages().find((i) => i.name === name);
  if (!found) throw new Error(`.run/images/index.json has no image ${name}: run scripts/images.sh`);
  return found.ref;
}

/** A reference as the chart's image values: repository and tag. */
export function splitRef(ref: string): { repository: string; tag: string } {
  const at = ref.lastIndexOf(':');
  return { repository: ref.slice(0, at), tag: ref.slice(at + 1) };
}
