import {
  chmodSync,
  chownSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join, normalize } from 'node:path';

export interface Owner {
  uid: number;
  gid: number;
}

export interface FileSpec {
  data: string;
  mode: number;
}

let tmpSeq = 0;

/**
 * Writes `file` atomically (a temporary file in the same directory, then rename), so a reader
 * polling it sees the old content or the new, never a partial one; and a process holding the
 * old file open sees it unlinked. Leaves a file with the same content and mode alone.
 * Returns whether it wrote.
 */
export function writeFileAtomic(file: string, data: string, mode: number, owner?: Owner): boolean {
  try {
    const st = statSync(file);
    if (
      (st.mode & 0o7777) === mode &&
      (!owner || (st.uid === owner.uid && st.gid === owner.gid)) &&
      readFileSync(file, 'utf8') === data
    )
      return false;
  } catch {
    /* absent */
  }
  const dir = dirname(file);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${basename(file)}.${process.pid}.${tmpSeq++}.tmp`);
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode);
  if (owner) chownSync(tmp, owner.uid, owner.gid);
  renameSync(tmp, file);
  return true;
}

/** Makes `dir` hold exactly `files` (by relative path), each written atomically. */
export function syncDir(dir: string, files: Map<string, FileSpec>, owner?: Owner): void {
  mkdirSync(dir, { recursive: true });
  const wanted = new Map([...files].map(([rel, f]) => [normalize(rel), f]));
  for (const [rel, f] of wanted) writeFileAtomic(join(dir, rel), f.data, f.mode, owner);
  const walk = (d: string, prefix: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const rel = prefix ? `${prefix}/${e.name}` : e.name;
      if (e.isDirectory()) walk(join(d, e.name), rel);
      else if (!wanted.has(rel)) rmSync(join(d, e.name), { force: true });
    }
  };
  walk(dir, '');
}

const ESC: Record<number, string> = {
  7: '\\a',
  8: '\\b',
  9: '\\t',
  10: '\\n',
  11: '\\v',
  12: '\\f',
  13: '\\r',
};

/** Go's strconv.Quote (fmt's %q of a string): what the kubelet writes downward API values as. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (cp >= 0x20 && cp < 0x7f) out += ch;
    else if (cp < 0x20 || cp === 0x7f) out += ESC[cp] ?? `\\x${cp.toString(16).padStart(2, '0')}`;
    // A lone surrogate cannot reach Go: its JSON decoder makes it U+FFFD, which is printable.
    else if (cp >= 0xd800 && cp <= 0xdfff) out += '\ufffd';
    // unicode.IsPrint: letters, marks, numbers, punctuation, symbols (and only the ASCII space).
    else if (/[\p{L}\p{M}\p{N}\p{P}\p{S}]/u.test(ch)) out += ch;
    else if (cp < 0x10000) out += `\\u${cp.toString(16).padStart(4, '0')}`;
    else out += `\\U${cp.toString(16).padStart(8, '0')}`;
  }
  return `${out}"`;
}

/**
 * A label or annotation map as a downward API file: `key="value"` lines sorted by key (Go's
 * byte order), no trailing newline (the kubelet's fieldpath.FormatMap).
 */
export function formatMap(m: Record<string, string> | undefined): string {
  return Object.keys(m ?? {})
    .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    .map((k) => `${k}=${goQuote(m![k]!)}`)
    .join('\n');
}

/** chown -R (symlinks themselves, not their targets). */
export function chownTree(path: string, owner: Owner): void {
  const walk = (p: string) => {
    const st = lstatSync(p);
    if (st.uid !== owner.uid || st.gid !== owner.gid) lchownSync(p, owner.uid, owner.gid);
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
  };
  walk(path);
}
