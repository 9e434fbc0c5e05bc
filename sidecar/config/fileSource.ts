import { type FSWatcher, watch } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { dirname, extname, join } from 'node:path';
import type { Counter, Gauge, Registry } from 'prom-client';
import { LineCounter, parseAllDocuments } from 'yaml';
import { backoffDelay } from '../../common/backoff.js';
import { apiVersionOf } from '../../common/kube/client.js';
import type { Logger } from '../../common/logger.js';
import {
  type ConfigSource,
  counterOn,
  DEFAULT_DEBOUNCE_MS,
  Debouncer,
  deepFreeze,
  describeResource,
  gaugeOn,
  objectsGauge,
  type RawResource,
  type ResourceKind,
  type SourceProblem,
  type SourceState,
  StatePublisher,
} from './source.js';

export interface FileSourceOptions {
  /** A YAML/JSON file, or a directory read recursively (*.yaml, *.yml, *.json). */
  path: string;
  kinds: readonly ResourceKind[];
  log: Logger;
  registry: Registry;
  debounceMs?: number;
  /** Full rescan period, a safety net for file events the kernel dropped. Default 30 s; 0: none. */
  rescanMs?: number;
}

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/**
 * Standalone mode: the manifests a user would `kubectl apply`, read from disk and re-read on
 * every change. Any file event leads to a full rescan; the publisher drops unchanged states,
 * so a rescan too many costs only the reading.
 *
 * Every directory gets its own non-recursive watch: Node 20's recursive fs.watch on Linux
 * loses a file once an editor has replaced it by rename, and a watch on a file itself does
 * not survive that either, whereas a directory's watch sees every create, write and rename in it.
 */
export class FileSource implements ConfigSource {
  readonly #opts: FileSourceOptions;
  readonly #log: Logger;
  readonly #objects: Gauge<'kind'>;
  readonly #problems: Gauge;
  readonly #debouncer: Debouncer;
  readonly #watchers = new Map<string, { watcher: FSWatcher; ino: number }>();
  #publisher: StatePublisher | undefined;
  #isDir = false;
  #dirs: string[] = [];
  #watchFailures = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #rescanTimer: NodeJS.Timeout | undefined;
  #queued: Promise<void> | undefined;
  #chain: Promise<void> = Promise.resolve();
  readonly #reads: Counter;
  #stopped = false;

  constructor(opts: FileSourceOptions) {
    this.#opts = opts;
    this.#log = opts.log.child({ component: 'config-source', source: 'file', path: opts.path });
    this.#objects = objectsGauge(opts.registry);
    this.#problems = gaugeOn(
      opts.registry,
      'nox_config_file_problems',
      'Documents in the configuration files that could not be read as resources.',
      [],
    );
    this.#reads = counterOn(
      opts.registry,
      'nox_config_file_reads_total',
      'Complete reads of the configuration files: at start, after a change the watcher saw, on the periodic rescan, on SIGHUP.',
      [],
    );
    this.#debouncer = new Debouncer(opts.debounceMs ?? DEFAULT_DEBOUNCE_MS, () => void this.reload());
  }

  async start(onState: (state: SourceState) => void): Promise<void> {
    if (this.#publisher) throw new Error('FileSource already started');
    const info = await stat(this.#opts.path).catch((e: Error) => {
      throw new Error(`configuration path ${this.#opts.path}: ${e.message}`);
    });
    this.#isDir = info.isDirectory();
    this.#dirs = [this.#isDir ? this.#opts.path : dirname(this.#opts.path)];
    this.#publisher = new StatePublisher(onState, this.#log);
    // Watch before the first read, so a change made during it is not lost.
    await this.#syncWatches();
    await this.reload();
    if (!this.#publisher.delivered)
      throw new Error(`configuration path ${this.#opts.path} could not be read`);
    const rescanMs = this.#opts.rescanMs ?? 30_000;
    if (rescanMs > 0) this.#rescanTimer = setInterval(() => void this.reload(), rescanMs).unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#debouncer.cancel();
    clearInterval(this.#rescanTimer);
    clearTimeout(this.#retryTimer);
    for (const { watcher } of this.#watchers.values()) watcher.close();
    this.#watchers.clear();
    await this.#chain;
  }

  healthy(): boolean {
    return !this.#stopped && this.#watchers.size > 0 && this.#watchFailures === 0;
  }

  /** Re-reads everything now (SIGHUP); resolves once the resulting state, if new, is delivered. */
  reload(): Promise<void> {
    // A read already queued behind the running one starts later, so it will see this change too.
    if (this.#queued) return this.#queued;
    const next = this.#chain
      .then(async () => {
        this.#queued = undefined;
        if (this.#stopped || !this.#publisher) return;
        const state = await this.#read();
        this.#reads.inc();
        if (this.#stopped) return;
        await this.#syncWatches();
        if (this.#publisher.publish(state)) this.#report(state);
      })
      .catch((e: Error) => this.#log.error({ err: e.message }, 'configuration read failed'));
    this.#queued = next;
    this.#chain = next;
    return next;
  }

  #report(state: SourceState): void {
    for (const { kind } of this.#opts.kinds) {
      this.#objects.set({ kind }, state.resources.filter((r) => r.kind === kind).length);
    }
    this.#problems.set(state.problems.length);
    for (const p of state.problems) this.#log.warn(p, 'configuration document skipped');
    this.#log.info(
      { resources: state.resources.length, problems: state.problems.length },
      'configuration files read',
    );
  }

  async #read(): Promise<SourceState> {
    const resources: RawResource[] = [];
    const problems: SourceProblem[] = [];
    let files = [this.#opts.path];
    if (this.#isDir) {
      try {
        const tree = await listManifests(this.#opts.path);
        files = tree.files;
        this.#dirs = tree.dirs;
      } catch (e) {
        return { resources, problems: [{ origin: this.#opts.path, reason: (e as Error).message }] };
      }
    }
    const seen = new Map<string, string>();
    for (const file of files) {
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (e) {
        // In a directory a file deleted since the listing is simply gone.
        if (this.#isDir && (e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        problems.push({ origin: file, reason: (e as Error).message });
        continue;
      }
      const parsed = parseManifests(text, file, this.#opts.kinds, this.#log);
      problems.push(...parsed.problems);
      for (const r of parsed.resources) {
        const id = `${r.apiVersion}|${describeResource(r)}`;
        const first = seen.get(id);
        if (first) {
          problems.push({
            origin: r.origin,
            reason: `duplicate ${describeResource(r)}, first defined at ${first}`,
          });
          continue;
        }
        seen.set(id, r.origin);
        resources.push(r);
      }
    }
    return { resources, problems };
  }

  /** One watch per directory of the last read; a directory replaced by rename has a new inode and gets a new watch. */
  async #syncWatches(): Promise<void> {
    if (this.#stopped) return;
    const wanted = new Map<string, number>();
    let failure: Error | undefined;
    for (const dir of this.#dirs) {
      try {
        wanted.set(dir, (await stat(dir)).ino);
      } catch (e) {
        failure ??= e as Error;
      }
    }
    for (const [dir, { watcher, ino }] of this.#watchers) {
      if (wanted.get(dir) === ino) continue;
      watcher.close();
      this.#watchers.delete(dir);
    }
    for (const [dir, ino] of wanted) {
      if (this.#watchers.has(dir)) continue;
      try {
        const watcher = watch(dir, () => this.#debouncer.trigger());
        watcher.on('error', (e) => {
          this.#log.warn({ dir, err: e.message }, 'directory watch broke');
          watcher.close();
          if (this.#watchers.get(dir)?.watcher === watcher) this.#watchers.delete(dir);
          this.#retryWatch();
        });
        this.#watchers.set(dir, { watcher, ino });
      } catch (e) {
        failure ??= e as Error;
      }
    }
    if (failure) {
      this.#log.warn(
        { err: failure.message, attempt: this.#watchFailures + 1 },
        'cannot watch configuration',
      );
      this.#retryWatch();
    } else if (this.#watchFailures > 0 && !this.#retryTimer) {
      this.#log.info('configuration watch re-established');
      this.#watchFailures = 0;
    }
  }

  #retryWatch(): void {
    if (this.#stopped || this.#retryTimer) return;
    const delay = backoffDelay(this.#watchFailures++, { initialMs: 250, maxMs: 10_000 });
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      void this.reload();
    }, delay);
  }
}

/**
 * Manifest files under `root` (sorted) and the directories holding them. Dot-entries are
 * skipped: editor files, and a ConfigMap volume's `..data` (its files are reached through
 * the symlinks next to it).
 */
async function listManifests(root: string): Promise<{ files: string[]; dirs: string[] }> {
  const files: string[] = [];
  const dirs: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    dirs.push(dir);
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (entry.name.startsWith('.')) continue;
      const full = join(dir, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (EXTENSIONS.has(extname(entry.name).toLowerCase())) {
        if (entry.isFile() || (entry.isSymbolicLink() && (await stat(full).catch(() => null))?.isFile())) {
          files.push(full);
        }
      }
    }
  };
  await walk(root);
  return { files: files.sort(), dirs };
}

/**
 * The resources of one file. Documents are numbered from 0 in `origin` (`file#2`); a `v1 List`
 * is unpacked (`file#2.items[0]`). Kinds this source does not serve are skipped.
 */
export function parseManifests(
  text: string,
  file: string,
  kinds: readonly ResourceKind[],
  log: Logger,
): { resources: RawResource[]; problems: SourceProblem[] } {
  const resources: RawResource[] = [];
  const problems: SourceProblem[] = [];
  const take = (value: unknown, origin: string, line?: number) => {
    const at = line === undefined ? {} : { line };
    if (value === null || value === undefined) return;
    if (typeof value !== 'object' || Array.isArray(value)) {
      problems.push({ origin, ...at, reason: 'document is not an object' });
      return;
    }
    const doc = value as Record<string, unknown>;
    if (doc.apiVersion === 'v1' && doc.kind === 'List' && Array.isArray(doc.items)) {
      for (const [i, item] of doc.items.entries()) take(item, `${origin}.items[${i}]`, line);
      return;
    }
    const shape = resourceShape(doc);
    if (typeof shape === 'string') {
      problems.push({ origin, ...at, reason: shape });
      return;
    }
    const served = kinds.find((k) => apiVersionOf(k) === shape.apiVersion && k.kind === shape.kind);
    if (!served) {
      const otherVersion = kinds.find(
        (k) => k.kind === shape.kind && shape.apiVersion.startsWith(`${k.group}/`),
      );
      if (otherVersion) {
        problems.push({
          origin,
          ...at,
          reason: `${shape.apiVersion} ${shape.kind} is not served; use ${apiVersionOf(otherVersion)}`,
        });
      } else
        log.debug({ origin, apiVersion: shape.apiVersion, kind: shape.kind }, 'kind not served; skipped');
      return;
    }
    resources.push(deepFreeze({ ...shape, origin }));
  };

  if (extname(file).toLowerCase() === '.json') {
    // JSON.parse, not the YAML parser: YAML accepts things JSON does not (`{"a": }`).
    try {
      take(JSON.parse(text), `${file}#0`);
    } catch (e) {
      problems.push({ origin: `${file}#0`, reason: `invalid JSON: ${(e as Error).message}` });
    }
    return { resources, problems };
  }
  const lines = new LineCounter();
  parseAllDocuments(text, { lineCounter: lines }).forEach((doc, i) => {
    const origin = `${file}#${i}`;
    const [error] = doc.errors;
    if (error) {
      const { line, col } = lines.linePos(error.pos[0]);
      const what = error.message.split('\n')[0]?.replace(/ at line \d+, column \d+:?$/, '');
      problems.push({ origin, line, reason: `YAML syntax error at line ${line}, column ${col}: ${what}` });
      return;
    }
    try {
      const start = doc.contents?.range[0] ?? doc.range[0];
      take(doc.toJS({ maxAliasCount: 100 }), origin, lines.linePos(start).line);
    } catch (e) {
      problems.push({ origin, reason: (e as Error).message });
    }
  });
  return { resources, problems };
}

/** The resource fields of a parsed document, or why it is not a resource. */
function resourceShape(doc: Record<string, unknown>): Omit<RawResource, 'origin'> | string {
  const { apiVersion, kind, metadata, spec } = doc;
  if (typeof apiVersion !== 'string' || apiVersion === '') return 'no apiVersion';
  if (typeof kind !== 'string' || kind === '') return 'no kind';
  if (typeof metadata !== 'object' || metadata === null) return `${kind} without metadata`;
  const { name, namespace, labels } = metadata as Record<string, unknown>;
  if (typeof name !== 'string' || name === '') return `${kind} without metadata.name`;
  if (namespace !== undefined && typeof namespace !== 'string')
    return `${kind} ${name}: metadata.namespace is not a string`;
  if (
    labels !== undefined &&
    (typeof labels !== 'object' ||
      labels === null ||
      Object.values(labels).some((v) => typeof v !== 'string'))
  ) {
    return `${kind} ${name}: metadata.labels must map strings to strings`;
  }
  return {
    apiVersion,
    kind,
    metadata: {
      name,
      ...(namespace === undefined ? {} : { namespace }),
      ...(labels === undefined ? {} : { labels: labels as Record<string, string> }),
    },
    ...(spec === undefined ? {} : { spec }),
  };
}
