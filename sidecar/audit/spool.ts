import {
  closeSync,
  fdatasync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  write,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const writeAsync = promisify(write);
const fdatasyncAsync = promisify(fdatasync);

/**
 * The audit spool: an append-only log on local disk that every audit event goes through on
 * its way to PostgreSQL (Vector's and Fluent Bit's disk buffers are the model). Segments are
 * numbered files of newline-terminated records; a cursor file says how far the shipper has
 * committed. Bounded: when the next write would pass maxBytes, the caller's policy decides
 * (drop the oldest segment, or refuse the record).
 *
 * An append is one write(2) of a whole group of records (group commit), and a fdatasync when
 * the mode asks for it, both off the event loop so that checks go on being decided meanwhile.
 * One append at a time (the caller's rule, AuditLog keeps it): the order of records is the
 * order of the appends, and the shipper reads only what a finished append wrote. Reads, the
 * cursor and segment deletion are synchronous: small, and never while a record is half-known.
 */

const SEGMENT = /^(\d{12})\.log$/;
const CURSOR = 'cursor';
const LOCK = 'lock';

export interface SpoolPosition {
  readonly segment: number;
  readonly offset: number;
}

interface Segment {
  readonly seq: number;
  bytes: number;
  records: number;
}

export interface ReadBatch {
  /** Each record without its newline: views of one buffer read from the segment. */
  readonly records: Buffer[];
  /** Where the shipper's cursor goes once these records are committed. */
  readonly next: SpoolPosition;
  /** Bytes of torn records skipped (a crash in the middle of a write). */
  readonly tornBytes: number;
}

export interface SpoolOptions {
  readonly dir: string;
  readonly maxBytes: number;
  /** A new segment starts once the current one reaches this size. */
  readonly segmentBytes?: number;
}

export class SpoolFull extends Error {
  constructor(
    readonly needed: number,
    readonly max: number,
  ) {
    super(`audit spool full: ${needed} bytes needed, ${max} allowed`);
  }
}

export class Spool {
  readonly #dir: string;
  readonly #max: number;
  readonly #segmentBytes: number;
  readonly #segments: Segment[] = [];
  #fd: number | undefined;
  #cursor: SpoolPosition;

  constructor(opts: SpoolOptions) {
    this.#dir = opts.dir;
    this.#max = opts.maxBytes;
    this.#segmentBytes = opts.segmentBytes ?? Math.min(8 << 20, Math.max(opts.maxBytes >> 4, 4096));
    mkdirSync(this.#dir, { recursive: true });
    takeLock(this.#dir);
    this.#cursor = this.#readCursor();
    for (const name of readdirSync(this.#dir).sort()) {
      const m = SEGMENT.exec(name);
      if (!m) continue;
      const seq = Number(m[1]);
      if (seq < this.#cursor.segment) {
        rmSync(join(this.#dir, name), { force: true });
        continue;
      }
      const path = join(this.#dir, name);
      this.#segments.push({ seq, bytes: statSync(path).size, records: countRecords(readFileSync(path)) });
    }
    // Never append to a segment found on disk: its tail may be torn. Start a new one.
    this.#openSegment((this.#segments.at(-1)?.seq ?? this.#cursor.segment - 1) + 1);
  }

  /** Bytes not yet shipped. */
  get bytes(): number {
    let total = 0;
    for (const s of this.#segments) total += s.bytes;
    return total - (this.#segments[0]?.seq === this.#cursor.segment ? this.#cursor.offset : 0);
  }

  get maxBytes(): number {
    return this.#max;
  }

  /**
   * Appends whole records (each one line, without its newline) in one write; with `sync`, also
   * fdatasync before returning. Throws SpoolFull when they do not fit (nothing is written).
   */
  async append(records: readonly string[], sync: boolean): Promise<void> {
    if (records.length === 0) return;
    const data = Buffer.from(`${records.join('\n')}\n`);
    if (this.bytes + data.length > this.#max) throw new SpoolFull(this.bytes + data.length, this.#max);
    let current = this.#segments.at(-1)!;
    if (current.bytes > 0 && current.bytes + data.length > this.#segmentBytes) {
      this.#openSegment(current.seq + 1);
      current = this.#segments.at(-1)!;
    }
    const fd = this.#fd!;
    let written = 0;
    while (written < data.length) written += (await writeAsync(fd, data, written)).bytesWritten;
    if (sync) await fdatasyncAsync(fd);
    current.bytes += data.length;
    current.records += records.length;
  }

  /**
   * Drops the oldest segment not yet shipped (all of it, the part already shipped too) and
   * returns how many unshipped records went with it; undefined when only the segment being
   * written is left.
   */
  dropOldest(): number | undefined {
    if (this.#segments.length < 2) return undefined;
    const oldest = this.#segments.shift()!;
    const unshipped =
      oldest.seq === this.#cursor.segment && this.#cursor.offset > 0
        ? countRecords(readFileSync(this.#path(oldest.seq)).subarray(this.#cursor.offset))
        : oldest.records;
    rmSync(this.#path(oldest.seq), { force: true });
    this.#writeCursor({ segment: this.#segments[0]!.seq, offset: 0 }, true);
    return unshipped;
  }

  /** Up to `maxRecords` whole records from the cursor on (none: everything is shipped). */
  read(maxRecords: number, maxBytes = 4 << 20): ReadBatch {
    const records: Buffer[] = [];
    let { segment, offset } = this.#cursor;
    let tornBytes = 0;
    for (const s of this.#segments) {
      if (s.seq < segment) continue;
      if (s.seq > segment) {
        segment = s.seq;
        offset = 0;
      }
      const want = Math.min(s.bytes - offset, maxBytes);
      if (want <= 0) continue;
      const buf = Buffer.allocUnsafe(want);
      const fd = s === this.#segments.at(-1) ? this.#fd! : openSync(this.#path(s.seq), 'r');
      let got = 0;
      try {
        while (got < want) {
          const n = readSync(fd, buf, got, want - got, offset + got);
          if (n === 0) break;
          got += n;
        }
      } finally {
        if (fd !== this.#fd) closeSync(fd);
      }
      let start = 0;
      for (let nl = buf.indexOf(10, 0); nl !== -1 && nl < got; nl = buf.indexOf(10, start)) {
        records.push(buf.subarray(start, nl));
        start = nl + 1;
        if (records.length >= maxRecords) break;
      }
      offset += start;
      if (records.length >= maxRecords) break;
      if (start < got && s !== this.#segments.at(-1) && offset + (got - start) >= s.bytes) {
        // The end of a closed segment without its newline: a write torn by a crash.
        tornBytes += s.bytes - offset;
        offset = s.bytes;
      }
      if (offset < s.bytes) break; // the rest of this segment did not fit in maxBytes
    }
    return { records, next: { segment, offset }, tornBytes };
  }

  /** The shipper committed everything before `to`: move the cursor, delete shipped segments. */
  commit(to: SpoolPosition, sync: boolean): void {
    while (this.#segments.length > 1 && this.#segments[0]!.seq < to.segment) {
      rmSync(this.#path(this.#segments.shift()!.seq), { force: true });
    }
    this.#writeCursor(to, sync);
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
    rmSync(join(this.#dir, LOCK), { force: true });
  }

  #path(seq: number): string {
    return join(this.#dir, `${String(seq).padStart(12, '0')}.log`);
  }

  #openSegment(seq: number): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = openSync(this.#path(seq), 'a+');
    this.#segments.push({ seq, bytes: fstatSync(this.#fd).size, records: 0 });
  }

  #readCursor(): SpoolPosition {
    try {
      const c = JSON.parse(readFileSync(join(this.#dir, CURSOR), 'utf8')) as SpoolPosition;
      if (Number.isInteger(c.segment) && Number.isInteger(c.offset)) return c;
    } catch {
      /* none yet */
    }
    return { segment: 0, offset: 0 };
  }

  #writeCursor(to: SpoolPosition, sync: boolean): void {
    this.#cursor = to;
    const tmp = join(this.#dir, `${CURSOR}.tmp`);
    writeFileSync(tmp, JSON.stringify(to), { flush: sync });
    renameSync(tmp, join(this.#dir, CURSOR));
  }
}

/**
 * One process per spool: two writing the same segments would interleave records and move one
 * cursor. The lock file names its holder; one whose process is gone (a SIGKILL) is taken over.
 */
function takeLock(dir: string): void {
  const path = join(dir, LOCK);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, String(process.pid), { flag: 'wx' });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = Number(readFileSync(path, 'utf8'));
      if (holder !== process.pid && isAlive(holder))
        throw new Error(
          `audit spool ${dir} is in use by process ${holder}: give each sidecar process its own`,
        );
      rmSync(path, { force: true });
    }
  }
  throw new Error(`audit spool ${dir}: could not take its lock`);
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function countRecords(buf: Buffer): number {
  let n = 0;
  for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, i + 1)) n++;
  return n;
}
