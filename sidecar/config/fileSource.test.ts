import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { waitUntil } from '../../test/harness/process.js';
import { metricSum } from '../../test/harness/registry.js';
import { StateRecorder } from '../../test/harness/sourceStates.js';
import { FileSource } from './fileSource.js';
import type { RawResource, ResourceKind, SourceState } from './source.js';

const log = createLogger('test', { level: process.env.NOX_LOG_LEVEL ?? 'silent' });
const widget: ResourceKind = { group: 'test.nox.dev', version: 'v1', kind: 'Widget', plural: 'widgets' };
const gadget: ResourceKind = { group: 'test.nox.dev', version: 'v1', kind: 'Gadget', plural: 'gadgets' };

const doc = (kind: string, name: string, spec: unknown = {}, extra = '') =>
  `apiVersion: test.nox.dev/v1\nkind: ${kind}\nmetadata:\n  name: ${name}\n${extra}spec: ${JSON.stringify(spec)}\n`;

const names = (s: SourceState) => s.resources.map((r) => r.metadata.name).sort();
const byName = (s: SourceState, name: string): RawResource | undefined =>
  s.resources.find((r) => r.metadata.name === name);

describe('FileSource', () => {
  let dir: string;
  let source: FileSource | undefined;
  let rec: StateRecorder;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nox-files-'));
    rec = new StateRecorder();
  });
  afterEach(async () => {
    await source?.stop();
    source = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  let registry: Registry;
  const reads = () => metricSum(registry, 'nox_config_file_reads_total');
  const startOn = async (path: string, kinds = [widget, gadget]) => {
    registry = new Registry();
    source = new FileSource({ path, kinds, log, registry, debounceMs: 50 });
    await source.start(rec.onState);
    return source;
  };

  it('reads a directory tree of YAML (multi-document) and JSON files, skipping other kinds', async () => {
    writeFileSync(
      join(dir, 'a.yaml'),
      [
        doc('Widget', 'w1', { size: 1 }),
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: not-ours\n',
        '# nothing but a comment\n',
        doc('Widget', 'w2', { size: 2 }, '  namespace: team-a\n  labels:\n    tier: gold\n'),
      ].join('---\n'),
    );
    mkdirSync(join(dir, 'sub', 'deeper'), { recursive: true });
    writeFileSync(join(dir, 'sub', 'deeper', 'b.yml'), doc('Gadget', 'g1'));
    writeFileSync(
      join(dir, 'c.json'),
      JSON.stringify({
        apiVersion: 'test.nox.dev/v1',
        kind: 'Widget',
        metadata: { name: 'w3' },
        spec: { size: 3 },
      }),
    );
    writeFileSync(
      join(dir, 'list.yaml'),
      `apiVersion: v1\nkind: List\nitems:\n- ${doc('Widget', 'w4').replace(/\n(?=.)/g, '\n  ')}`,
    );
    writeFileSync(join(dir, 'notes.txt'), doc('Widget', 'not-a-manifest-file'));
    writeFileSync(join(dir, '.hidden.yaml'), doc('Widget', 'hidden'));
    await startOn(dir);

    expect(rec.states).toHaveLength(1);
    const state = rec.last;
    expect(state.problems).toEqual([]);
    expect(names(state)).toEqual(['g1', 'w1', 'w2', 'w3', 'w4']);
    expect(byName(state, 'w1')?.origin).toBe(`${join(dir, 'a.yaml')}#0`);
    expect(byName(state, 'w2')).toEqual({
      apiVersion: 'test.nox.dev/v1',
      kind: 'Widget',
      metadata: { name: 'w2', namespace: 'team-a', labels: { tier: 'gold' } },
      spec: { size: 2 },
      origin: `${join(dir, 'a.yaml')}#3`,
    });
    expect(byName(state, 'w3')?.spec).toEqual({ size: 3 });
    expect(byName(state, 'w4')?.origin).toBe(`${join(dir, 'list.yaml')}#0.items[0]`);
    expect(Object.isFrozen(byName(state, 'w2')?.metadata.labels)).toBe(true);
    expect(source?.healthy()).toBe(true);
  });

  it('delivers only the kinds it serves', async () => {
    writeFileSync(join(dir, 'all.yaml'), [doc('Widget', 'w1'), doc('Gadget', 'g1')].join('---\n'));
    await startOn(dir, [gadget]);
    expect(names(rec.last)).toEqual(['g1']);
    expect(rec.last.problems).toEqual([]);
  });

  it('turns a syntax error into a problem for its file while the other files load', async () => {
    writeFileSync(join(dir, 'good.yaml'), doc('Widget', 'good'));
    writeFileSync(
      join(dir, 'broken.yaml'),
      `${doc('Widget', 'fine-doc')}---\nkind: Widget\nmetadata:\n  name: [oops\n`,
    );
    writeFileSync(join(dir, 'broken.json'), '{"apiVersion": "test.nox.dev/v1", "kind": }');
    writeFileSync(
      join(dir, 'incomplete.yaml'),
      [
        'apiVersion: test.nox.dev/v1\nmetadata:\n  name: no-kind\n',
        'apiVersion: test.nox.dev/v1\nkind: Widget\nmetadata: {}\n',
        '- a list\n',
      ].join('---\n'),
    );
    await startOn(dir);

    const { problems } = rec.last;
    expect(names(rec.last)).toEqual(['fine-doc', 'good']);
    const of = (file: string) => problems.filter((p) => p.origin.startsWith(join(dir, file)));
    expect(of('broken.yaml')).toEqual([
      expect.objectContaining({
        origin: `${join(dir, 'broken.yaml')}#1`,
        line: 10,
        reason: expect.stringMatching(/^YAML syntax error at line 10, column 1: Flow sequence/),
      }),
    ]);
    expect(of('broken.json')).toEqual([
      { origin: `${join(dir, 'broken.json')}#0`, reason: expect.stringMatching(/invalid JSON/) },
    ]);
    expect(of('incomplete.yaml')).toEqual([
      { origin: `${join(dir, 'incomplete.yaml')}#0`, line: 1, reason: 'no kind' },
      { origin: `${join(dir, 'incomplete.yaml')}#1`, line: 5, reason: 'Widget without metadata.name' },
      { origin: `${join(dir, 'incomplete.yaml')}#2`, line: 9, reason: 'document is not an object' },
    ]);
    expect(problems).toHaveLength(5);
  });

  it('reports an unserved version of a served kind and duplicates, instead of dropping them silently', async () => {
    writeFileSync(
      join(dir, 'a.yaml'),
      [doc('Widget', 'w1'), doc('Widget', 'w1', { again: true })].join('---\n'),
    );
    writeFileSync(join(dir, 'b.yaml'), doc('Widget', 'old').replace('test.nox.dev/v1', 'test.nox.dev/v0'));
    await startOn(dir);
    expect(names(rec.last)).toEqual(['w1']);
    expect(byName(rec.last, 'w1')?.spec).toEqual({});
    expect(rec.last.problems.map((p) => p.reason)).toEqual([
      `duplicate Widget w1, first defined at ${join(dir, 'a.yaml')}#0`,
      'test.nox.dev/v0 Widget is not served; use test.nox.dev/v1',
    ]);
  });

  it('delivers edits, additions, deletions and rename-replacements within 1 s', async () => {
    writeFileSync(join(dir, 'a.yaml'), doc('Widget', 'a', { v: 1 }));
    writeFileSync(join(dir, 'b.yaml'), doc('Widget', 'b'));
    await startOn(dir);
    expect(names(rec.last)).toEqual(['a', 'b']);

    writeFileSync(join(dir, 'a.yaml'), doc('Widget', 'a', { v: 2 }));
    const edited = await rec.waitFor((s) => (byName(s, 'a')?.spec as { v?: number } | undefined)?.v === 2);
    expect(edited.ms).toBeLessThan(1000);

    mkdirSync(join(dir, 'new-dir'));
    writeFileSync(join(dir, 'new-dir', 'c.yaml'), doc('Widget', 'c'));
    const added = await rec.waitFor((s) => names(s).includes('c'));
    expect(names(added.state)).toEqual(['a', 'b', 'c']);
    expect(added.ms).toBeLessThan(1000);
    writeFileSync(join(dir, 'new-dir', 'c.yaml'), doc('Widget', 'c', { v: 1 }));
    await rec.waitFor((s) => (byName(s, 'c')?.spec as { v?: number } | undefined)?.v === 1);

    unlinkSync(join(dir, 'b.yaml'));
    const deleted = await rec.waitFor((s) => !names(s).includes('b'));
    expect(names(deleted.state)).toEqual(['a', 'c']);
    expect(deleted.ms).toBeLessThan(1000);

    // How vim and most editors save: write a temporary file, rename it over the original.
    writeFileSync(join(dir, '.a.yaml.tmp'), doc('Widget', 'a', { v: 3 }));
    renameSync(join(dir, '.a.yaml.tmp'), join(dir, 'a.yaml'));
    const replaced = await rec.waitFor((s) => (byName(s, 'a')?.spec as { v?: number } | undefined)?.v === 3);
    expect(replaced.ms).toBeLessThan(1000);
    expect(names(replaced.state)).toEqual(['a', 'c']);

    // Regression: Node 20's recursive fs.watch stops seeing a file once it has been replaced by rename.
    writeFileSync(join(dir, 'a.yaml'), 'kind: [\n');
    const broken = await rec.waitFor((s) => s.problems.length === 1);
    expect(names(broken.state)).toEqual(['c']);
    expect(source?.healthy()).toBe(true);
  });

  it('watches a single file across rename-replacement and deletion', async () => {
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, doc('Widget', 'one'));
    writeFileSync(join(dir, 'unrelated.yaml'), doc('Widget', 'unrelated'));
    await startOn(file);
    expect(names(rec.last)).toEqual(['one']);

    for (const name of ['two', 'three']) {
      writeFileSync(`${file}.swp`, doc('Widget', name));
      renameSync(`${file}.swp`, file);
      const { ms } = await rec.waitFor((s) => names(s).join() === name);
      expect(ms).toBeLessThan(1000);
    }
    unlinkSync(file);
    const gone = await rec.waitFor((s) => s.resources.length === 0);
    expect(gone.state.problems).toEqual([{ origin: file, reason: expect.stringMatching(/ENOENT/) }]);
    writeFileSync(file, doc('Widget', 'back'));
    await rec.waitFor((s) => names(s).join() === 'back');
  });

  it('follows a ConfigMap volume update (atomic swap of the ..data symlink)', async () => {
    const version = (n: number, name: string) => {
      mkdirSync(join(dir, `..v${n}`));
      writeFileSync(join(dir, `..v${n}`, 'policy.yaml'), doc('Widget', name));
    };
    version(1, 'first');
    symlinkSync('..v1', join(dir, '..data'));
    symlinkSync('..data/policy.yaml', join(dir, 'policy.yaml'));
    await startOn(dir);
    expect(names(rec.last)).toEqual(['first']);

    version(2, 'second');
    symlinkSync('..v2', join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    rmSync(join(dir, '..v1'), { recursive: true });
    const { state, ms } = await rec.waitFor((s) => names(s).join() === 'second');
    expect(ms).toBeLessThan(1000);
    expect(state.problems).toEqual([]);
  });

  it('delivers a new state only when something changed, and reload() reads at once', async () => {
    const file = join(dir, 'a.yaml');
    writeFileSync(file, doc('Widget', 'a'));
    await startOn(dir);
    const readsBefore = await reads();
    writeFileSync(file, doc('Widget', 'a'));
    writeFileSync(join(dir, 'ignored.txt'), 'x');
    // The signal that the writes were seen: the watcher's read of the files, which found nothing new.
    await waitUntil('a read after the writes', async () => (await reads()) > readsBefore, 5000, {
      intervalMs: 10,
    });
    expect(rec.states).toHaveLength(1);

    writeFileSync(file, doc('Widget', 'a', { v: 2 }));
    await source?.reload();
    expect(byName(rec.last, 'a')?.spec).toEqual({ v: 2 });
  });

  it('is unhealthy while its directory is gone, and recovers when it comes back', async () => {
    const conf = join(dir, 'conf');
    mkdirSync(conf);
    writeFileSync(join(conf, 'a.yaml'), doc('Widget', 'a'));
    await startOn(conf);
    rmSync(conf, { recursive: true });
    const gone = await rec.waitFor((s) => s.resources.length === 0);
    expect(gone.state.problems).toEqual([{ origin: conf, reason: expect.stringMatching(/ENOENT/) }]);
    expect(source?.healthy()).toBe(false);

    mkdirSync(conf);
    writeFileSync(join(conf, 'b.yaml'), doc('Widget', 'b'));
    await rec.waitFor((s) => names(s).join() === 'b', 3000);
    expect(source?.healthy()).toBe(true);
    writeFileSync(join(conf, 'b.yaml'), doc('Widget', 'b', { v: 2 }));
    await rec.waitFor((s) => (byName(s, 'b')?.spec as { v?: number } | undefined)?.v === 2);
  });

  it('refuses to start on a path that does not exist', async () => {
    const missing = new FileSource({
      path: join(dir, 'nope'),
      kinds: [widget],
      log,
      registry: new Registry(),
    });
    await expect(missing.start(rec.onState)).rejects.toThrow(/nope.*ENOENT/);
    expect(rec.states).toHaveLength(0);
  });
});
