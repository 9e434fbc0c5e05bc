import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sleep } from '../harness/process.js';

/**
 * One test node per machine at a time: the network plan, the netns name and the kubelet's
 * cgroup root are fixed, and two nodes would also starve each other on 2 cores. A directory
 * made with mkdir (atomic) holds the owner's pid; a dead owner's lock is taken over, so a
 * killed test run never blocks the next one.
 */
const LOCK = '/tmp/nox-node.lock.d';

/** Alive and not a zombie (a killed owner whose parent died too lingers as one for a while). */
function ownerAlive(): boolean {
  try {
    const pid = Number(readFileSync(join(LOCK, 'pid'), 'utf8'));
    if (!Number.isInteger(pid) || pid <= 0) return false;
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Waits for the machine's node lock (another test file's node) for at most `timeoutMs`; returns the release. */
export async function acquireNodeLock(timeoutMs: number): Promise<() => void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(LOCK);
      writeFileSync(join(LOCK, 'pid'), String(process.pid));
      return () => rmSync(LOCK, { recursive: true, force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // A lock whose pid file is not written yet belongs to an owner in mid-mkdir: wait.
    let pidWritten = true;
    try {
      readFileSync(join(LOCK, 'pid'));
    } catch {
      pidWritten = false;
    }
    if (pidWritten && !ownerAlive()) {
      rmSync(LOCK, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline)
      throw new Error(`another test node holds ${LOCK} for longer than ${timeoutMs} ms`);
    await sleep(500);
  }
}
