import { type FSWatcher, watch } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../common/logger.js';
import { type SecretContent, type SecretStore, selectByLabels } from './secretStore.js';

export interface DirSecretStoreOptions {
  /** Root: `<dir>/<namespace>/<secret-name>/<key>`. */
  dir: string;
  log: Logger;
  /** Full rescan interval, the safety net under fs.watch (which misses symlink swaps). Default 2 s. */
  pollMs?: number;
}

type StoredSecret = SecretContent;

/** Secret keys may not start with "..", so this name never collides with a key. */
export const LABELS_FILE = '..labels';
/** Larger than any Secret the API server accepts (1 MiB): not a Secret key. */
const MAX_FILE_BYTES = 1 << 20;

/**
 * Standalone mode: Secrets as files, one directory per namespace and one per Secret, each
 * key a file, as a Secret volume is mounted (its `..data` symlink swap included). Labels,
 * which a volume does not carry, come from an optional `..labels` file in the Secret's
 * directory, in the Downward API format (`key="value"` per line). Watched with fs.watch
 * plus a periodic rescan; a rescan that fails keeps the last good contents.
 */
export class DirSecretStore implements SecretStore {
  readonly #opts: DirSecretStoreOptions;
  readonly #listeners: (() => void)[] = [];
  readonly #watchers = new Map<string, FSWatcher>();
  #secrets = new Map<string, Map<string, StoredSecret>>();
  #fingerprint = '';
  #timer: NodeJS.Timeout | undefined;
  #scanning: Promise<void> | undefined;
  #again = false;
  #stopped = false;

  constructor(opts: DirSecretStoreOptions) {
    this.#opts = opts;
  }

  get(namespace: string, name: string, key: string): Buffer | undefined {
    return this.#secrets.get(namespace)?.get(name)?.data[key];
  }

  select(
    namespace: string,
    labels: Readonly<Record<string, string>>,
  ): ReadonlyMap<string, Readonly<Record<string, Buffer>>> {
    return selectByLabels(this.#secrets.get(namespace) ?? [], labels);
  }

  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  async start(): Promise<void> {
    // The first scan must succeed: a missing root is a configuration error, not an empty store.
    await stat(this.#opts.dir);
    await this.rescan();
    const tick = () => {
      if (this.#stopped) return;
      this.rescan().finally(() => {
        if (!this.#stopped) this.#timer = setTimeout(tick, this.#opts.pollMs ?? 2000);
      });
    };
    this.#timer = setTimeout(tick, this.#opts.pollMs ?? 2000);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
    await this.#scanning;
  }

  /** Re-reads the tree; concurrent calls coalesce into one more scan after the running one. */
  rescan(): Promise<void> {
    if (this.#scanning) {
      this.#again = true;
      return this.#scanning;
    }
    this.#scanning = (async () => {
      do {
        this.#again = false;
        try {
          await this.#scan();
        } catch (e) {
          this.#opts.log.warn(
            { err: (e as Error).message, dir: this.#opts.dir },
            'secret directory scan failed',
          );
        }
      } while (this.#again && !this.#stopped);
    })().finally(() => {
      this.#scanning = undefined;
    });
    return this.#scanning;
  }

  async #scan(): Promise<void> {
    const root = this.#opts.dir;
    const next = new Map<string, Map<string, StoredSecret>>();
    const dirs = [root];
    for (const ns of await subdirs(root)) {
      const nsDir = join(root, ns);
      dirs.push(nsDir);
      const secrets = new Map<string, StoredSecret>();
      for (const name of await subdirs(nsDir)) {
        const secretDir = join(nsDir, name);
        dirs.push(secretDir);
        const secret = await readSecret(secretDir);
        if (secret) secrets.set(name, secret);
      }
      next.set(ns, secrets);
    }
    if (this.#stopped) return;
    this.#syncWatchers(dirs);
    const print = fingerprint(next);
    if (print === this.#fingerprint) return;
    this.#secrets = next;
    this.#fingerprint = print;
    for (const l of this.#listeners) {
      try {
        l();
      } catch (e) {
        this.#opts.log.error({ err: (e as Error).message }, 'secret change listener threw');
      }
    }
  }

  #syncWatchers(dirs: readonly string[]): void {
    const want = new Set(dirs);
    for (const [d, w] of this.#watchers) {
      if (!want.has(d)) {
        w.close();
        this.#watchers.delete(d);
      }
    }
    for (const d of want) {
      if (this.#watchers.has(d)) continue;
      try {
        const w = watch(d, { persistent: false }, () => void this.rescan());
        w.on('error', () => {
          w.close();
          this.#watchers.delete(d);
        });
        this.#watchers.set(d, w);
      } catch {
        /* gone already; the next scan notices */
      }
    }
  }
}

/** Visible subdirectories (following symlinks); Kubernetes' own `..data` entries are skipped. */
async function subdirs(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir)) {
    if (e.startsWith('..')) continue;
    const s = await stat(join(dir, e)).catch(() => undefined);
    if (s?.isDirectory()) out.push(e);
  }
  return out.sort();
}

async function readSecret(dir: string): Promise<StoredSecret | undefined> {
  const data: Record<string, Buffer> = {};
  let labels: Record<string, string> = {};
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return undefined; // removed while scanning
  }
  for (const e of entries.sort()) {
    if (e.startsWith('..') && e !== LABELS_FILE) continue;
    const path = join(dir, e);
    const s = await stat(path).catch(() => undefined);
    if (!s?.isFile() || s.size > MAX_FILE_BYTES) continue;
    const content = await readFile(path).catch(() => undefined);
    if (!content) continue;
    if (e === LABELS_FILE) labels = parseLabels(content.toString('utf8'));
    else data[e] = content;
  }
  return { labels, data };
}

/** `key="value"` lines (the Downward API's format); unquoted values are accepted too. */
export function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([^=\s#][^=]*?)\s*=\s*(.*?)\s*$/.exec(line);
    if (!m) continue;
    let value = m[2]!;
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        continue;
      }
    }
    out[m[1]!] = value;
  }
  return out;
}

function fingerprint(all: Map<string, Map<string, StoredSecret>>): string {
  const parts: unknown[] = [];
  for (const [ns, secrets] of all) {
    for (const [name, s] of secrets) {
      parts.push([ns, name, s.labels, Object.entries(s.data).map(([k, v]) => [k, v.toString('base64')])]);
    }
  }
  return JSON.stringify(parts);
}
