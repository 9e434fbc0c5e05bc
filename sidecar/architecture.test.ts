import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * The sidecar's layers, bottom first. Code may import from its own folder and from folders
 * of a lower layer, never from its own layer's other folders or above: so no lower layer
 * imports a stage, and the folders form no cycle. A new folder has to be placed here.
 */
const layers: readonly (readonly string[])[] = [
  ['errors.ts', 'settings', 'config', 'rbac.ts'], // closed list of codes; settings; where resources come from
  ['request'], // what one check is: CheckInput, Identity, Outcome, Decision
  ['policy', 'risk'], // resources compiled into the snapshot a check reads; risk models and features
  ['pipeline'], // the stage contract (Ctx, Stage) and the runner
  ['secrets', 'redis', 'audit'], // libraries the stages (and the checker: audit) use ...
  ['quota', 'identity'],
  ['login'],
  ['stages'], // the request path, one file per phase, in order in stages/order.ts
  ['server'], // the gRPC server and the checker around the pipeline
  ['wiring'], // settings → stores, clients, stages
  ['main.ts'],
];
const stageFolder = 'stages';

const root = dirname(fileURLToPath(import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') && !e.name.endsWith('.d.ts') ? [path] : [];
  });
}

/** Static imports, re-exports, type imports and import() calls; a folder of the sidecar is what matters. */
const importPattern =
  /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\s*\(\s*['"]([^'"]+)['"]\s*\)|^import\s+['"]([^'"]+)['"]/gm;

/** sidecar-relative path of each file → the sidecar files it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(root)) {
    const from = relative(root, file);
    const targets: string[] = [];
    for (const m of readFileSync(file, 'utf8').matchAll(importPattern)) {
      const spec = m[1] ?? m[2] ?? m[3]!;
      if (!spec.startsWith('.')) continue;
      const to = normalize(join(dirname(from), spec)).replace(/\.js$/, '.ts');
      if (!to.startsWith('..')) targets.push(to);
    }
    graph.set(from, targets);
  }
  return graph;
}

const folderOf = (path: string) => path.split('/')[0]!;
const layerOf = (folder: string) => layers.findIndex((l) => l.includes(folder));

/** Every cycle found by a depth-first walk, each as the files along it. */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (file: string) => {
    state.set(file, 'open');
    path.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'open') found.push([...path.slice(path.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    path.pop();
    state.set(file, 'done');
  };
  for (const file of graph.keys()) if (!state.has(file)) visit(file);
  return found;
}

describe('sidecar architecture', () => {
  const graph = importGraph();
  const edges = [...graph].flatMap(([from, tos]) => tos.map((to) => ({ from, to })));

  it('reads the imports it checks', () => {
    expect(graph.size).toBeGreaterThan(50);
    expect(edges).toContainEqual({ from: 'main.ts', to: 'stages/order.ts' });
    // A type-only import is a dependency too; so is a lazy import().
    expect(edges).toContainEqual({ from: 'pipeline/stage.ts', to: 'policy/snapshot.ts' });
    expect(edges).toContainEqual({ from: 'wiring/quota.ts', to: 'quota/redisStore.ts' });
  });

  it('has no import cycle', () => {
    expect(cycles(graph).map((c) => c.join(' → '))).toEqual([]);
  });

  it('places every folder in a layer', () => {
    const unplaced = [...new Set([...graph.keys()].map(folderOf))].filter((f) => layerOf(f) < 0);
    expect(unplaced).toEqual([]);
  });

  it('imports only from the same folder or a lower layer', () => {
    const upward = edges
      .filter(({ from, to }) => folderOf(from) !== folderOf(to))
      .filter(({ from, to }) => layerOf(folderOf(to)) >= layerOf(folderOf(from)))
      .map(({ from, to }) => `${from} → ${to}`);
    expect(upward).toEqual([]);
  });

  it('lets only the server, the wiring and main import a stage', () => {
    const into = edges
      .filter(({ from, to }) => folderOf(to) === stageFolder && folderOf(from) !== stageFolder)
      .filter(({ from }) => !['server', 'wiring', 'main.ts'].includes(folderOf(from)))
      .map(({ from, to }) => `${from} → ${to}`);
    expect(into).toEqual([]);
  });
});
