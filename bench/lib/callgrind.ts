import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Instructions counted by valgrind's callgrind. perf cannot count them on these VMs (the
 * kernel says "PMU not available due to virtualization"); callgrind counts in software, every
 * thread of the process, unaffected by what else the machine runs.
 */

/** The command prefix that runs a program under callgrind, counting nothing until switched on. */
export function callgrindCommand(outFile: string): string[] {
  return ['valgrind', '--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${outFile}`];
}

/** `callgrind_control <args> <pid>`: switch counting on or off (-i on|off), zero (-z), dump (-d). */
export async function callgrindControl(pid: number, ...args: string[]): Promise<void> {
  await run('callgrind_control', [...args, String(pid)]);
}

/** One callgrind dump: its total and every function's own (exclusive) instructions. */
export interface Dump {
  readonly total: number;
  /** Self cost by function name, summed over the objects and files it appears in. */
  readonly byFunction: Map<string, number>;
}

/**
 * Reads a dump in callgrind's format (valgrind's docs, "Callgrind Format Specification"):
 * names are compressed as "(id) name" the first time and "(id)" after; a cost line after
 * `fn=` is that function's own cost, the one after `calls=` is the inclusive cost of the call
 * and belongs to the callee, so it is skipped. Fails when the functions do not add up to the
 * dump's `totals:` line, rather than report a figure from a file it misread.
 */
export function readDump(file: string): Dump {
  const names = new Map<string, string>();
  const name = (kind: string, value: string) => {
    const m = /^\((\d+)\)(?: (.*))?$/.exec(value);
    if (!m) return value;
    const key = `${kind}:${m[1]}`;
    if (m[2] !== undefined) names.set(key, m[2]);
    return names.get(key) ?? value;
  };
  const byFunction = new Map<string, number>();
  let positions = 1;
  let fn = '';
  let afterCalls = false;
  let total = Number.NaN;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (/^[0-9+*-]/.test(line)) {
      if (afterCalls) {
        afterCalls = false;
        continue;
      }
      const ir = Number(line.split(' ')[positions] ?? 0);
      byFunction.set(fn, (byFunction.get(fn) ?? 0) + ir);
      continue;
    }
    const eq = line.indexOf('=');
    const key = eq > 0 ? line.slice(0, eq) : '';
    const value = line.slice(eq + 1);
    if (key === 'fn') fn = name('fn', value);
    else if (key === 'cfn') name('fn', value);
    else if (key === 'calls') afterCalls = true;
    else if (line.startsWith('positions:')) positions = line.split(/\s+/).length - 1;
    else if (line.startsWith('totals:')) total = Number(line.slice('totals:'.length));
  }
  const counted = [...byFunction.values()].reduce((a, b) => a + b, 0);
  if (counted !== total) throw new Error(`${file}: functions add up to ${counted}, totals: says ${total}`);
  return { total, byFunction };
}

/**
 * Two parts of V8 that run on a check's account but are not the cost of a check, and make
 * the total swing by up to ±15% between identical runs of a few thousand checks:
 * - the optimizing compilers (TurboFan, Turboshaft, Maglev): each ghz run opens a new
 *   connection, which deoptimizes and re-optimizes the net/stream/http2 functions; a fixed
 *   cost per run;
 * - the garbage collector (scavenger, mark-compact, sweeper, the marking visitors, the heap's
 *   spaces and remembered sets): whether a mark-compact falls inside the window or not.
 * They are told apart by C++ symbol name: V8 is linked into the node executable with its
 * symbols, while JIT-compiled JavaScript (which is the cost of a check) has none, and
 * libc, OpenSSL and the rest of node are counted in full.
 */
const compiler = (fn: string) => /compiler::|turboshaft/.test(fn) || /maglev/i.test(fn);
const gc = new RegExp(
  [
    'Scaveng',
    'MarkCompact',
    'heap::',
    'Heap::',
    'GCTracer',
    'Sweep',
    'MemoryAllocator',
    'Marking',
    'Evacuat',
    'Visitor',
    'SizeFromMap',
    'MemoryChunk',
    'Pretenuring',
    'SemiSpace',
    'NewSpace',
    'PagedSpace',
    'FreeList',
    'Compaction',
    'RememberedSet',
    'TableCleaner',
    'LiveObject',
    'BodyDescriptor',
    'Migrat',
    'Promot',
    'WeakObjects',
    'Ephemeron',
    'GlobalHandles',
    'ConcurrentMark',
    'LocalHeap',
    'Safepoint',
    'MinorMC',
    'ArrayBufferSweeper',
    'SlotSet',
    'TypedSlot',
  ].join('|'),
);

/** A dump's instructions split into V8's optimizing compilers, V8's GC, and the rest. */
export function splitV8(dump: Dump): { compiler: number; gc: number; rest: number } {
  let inCompiler = 0;
  let inGc = 0;
  for (const [fn, ir] of dump.byFunction) {
    if (compiler(fn)) inCompiler += ir;
    else if (gc.test(fn)) inGc += ir;
  }
  return { compiler: inCompiler, gc: inGc, rest: dump.total - inCompiler - inGc };
}
