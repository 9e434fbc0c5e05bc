import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { testLog } from '../../test/harness/log.js';
import { waitUntil } from '../../test/harness/process.js';
import { DirSecretStore, parseLabels } from './dirSecretStore.js';

const log = createLogger('dir-secret-store-test', { level: 'silent' });
const dirs: string[] = [];
const stores: DirSecretStore[] = [];

function tempRoot(): string {
  const d = mkdtempSync(join(tmpdir(), 'nox-secrets-'));
  dirs.push(d);
  return d;
}

function writeSecret(
  root: string,
  ns: string,
  name: string,
  data: Record<string, string>,
  labels?: string,
): void {
  const dir = join(root, ns, name);
  mkdirSync(dir, { recursive: true });
  for (const [k, v] of Object.entries(data)) writeFileSync(join(dir, k), v);
  if (labels !== undefined) writeFileSync(join(dir, '..labels'), labels);
}

/** What the kubelet does for a Secret volume: keys are symlinks into ..data, itself a symlink swapped atomically. */
function writeKubeletVolume(dir: string, generation: string, data: Record<string, string>): void {
  mkdirSync(join(dir, generation), { recursive: true });
  for (const [k, v] of Object.entries(data)) writeFileSync(join(dir, generation, k), v);
  symlinkSync(generation, join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  for (const k of Object.keys(data)) {
    try {
      symlinkSync(join('..data', k), join(dir, k));
    } catch {
      /* already linked */
    }
  }
}

async function started(root: string, pollMs = 200): Promise<DirSecretStore> {
  const s = new DirSecretStore({ dir: root, log, pollMs });
  stores.push(s);
  await s.start();
  return s;
}

const eventually = (what: string, check: () => boolean) => waitUntil(what, check, 5000, { intervalMs: 10 });

afterEach(async () => {
  await Promise.all(stores.splice(0).map((s) => s.stop()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('DirSecretStore', () => {
  it('reads <dir>/<namespace>/<secret>/<key> and selects by the ..labels file', async () => {
    const root = tempRoot();
    writeSecret(root, 'team-a', 'key-1', { apiKey: 'k1' }, 'nox.dev/api-key="true"\ntier=gold\n');
    writeSecret(root, 'team-a', 'key-2', { apiKey: 'k2' }, 'nox.dev/api-key="true"\n');
    writeSecret(root, 'team-a', 'oauth', { clientSecret: 's3cret' });
    writeSecret(root, 'team-b', 'key-3', { apiKey: 'k3' }, 'nox.dev/api-key="true"\n');
    const s = await started(root);

    expect(s.get('team-a', 'oauth', 'clientSecret')?.toString()).toBe('s3cret');
    expect(s.get('team-a', 'oauth', 'missing')).toBeUndefined();
    expect(s.get('team-a', 'nope', 'clientSecret')).toBeUndefined();
    expect(s.get('team-c', 'oauth', 'clientSecret')).toBeUndefined();
    expect(s.get('team-a', 'key-1', '..labels')).toBeUndefined();

    const selected = s.select('team-a', { 'nox.dev/api-key': 'true' });
    expect([...selected.keys()]).toEqual(['key-1', 'key-2']);
    expect(selected.get('key-1')?.apiKey?.toString()).toBe('k1');
    expect([...s.select('team-a', { 'nox.dev/api-key': 'true', tier: 'gold' }).keys()]).toEqual(['key-1']);
    expect([...s.select('team-b', { 'nox.dev/api-key': 'true' }).keys()]).toEqual(['key-3']);
    expect([...s.select('team-a', {}).keys()]).toEqual(['key-1', 'key-2', 'oauth']);
  });

  it('sees a new, a changed and a deleted Secret, and tells its listeners once per change', async () => {
    const root = tempRoot();
    writeSecret(root, 'ns', 'a', { k: 'v1' });
    const s = await started(root, 500);
    let changes = 0;
    s.onChange(() => changes++);

    writeSecret(root, 'ns', 'b', { k: 'b' });
    const added = await eventually('the new Secret', () => s.get('ns', 'b', 'k')?.toString() === 'b');
    writeFileSync(join(root, 'ns', 'a', 'k'), 'v2');
    const changed = await eventually('the changed key', () => s.get('ns', 'a', 'k')?.toString() === 'v2');
    rmSync(join(root, 'ns', 'a'), { recursive: true });
    const deleted = await eventually('the deleted Secret gone', () => s.get('ns', 'a', 'k') === undefined);
    testLog(`dir store: added ${added} ms, changed ${changed} ms, deleted ${deleted} ms`);
    expect(changes).toBeGreaterThanOrEqual(3);

    const before = changes;
    await s.rescan();
    await s.rescan();
    expect(changes).toBe(before);
  });

  it('follows a kubelet-style ..data symlink swap, and ignores the ..data entries as keys', async () => {
    const root = tempRoot();
    const dir = join(root, 'ns', 'mounted');
    mkdirSync(dir, { recursive: true });
    writeKubeletVolume(dir, '..2026_01_01_00_00_00.1', { token: 'old' });
    const s = await started(root, 300);
    expect(s.get('ns', 'mounted', 'token')?.toString()).toBe('old');
    expect(Object.keys(s.select('ns', {}).get('mounted') ?? {})).toEqual(['token']);

    writeKubeletVolume(dir, '..2026_01_01_00_01_00.2', { token: 'new' });
    const ms = await eventually(
      'the swapped volume',
      () => s.get('ns', 'mounted', 'token')?.toString() === 'new',
    );
    testLog(`dir store: symlink swap seen after ${ms} ms`);
  });

  it('refuses to start on a missing directory, and keeps serving when its directory vanishes', async () => {
    await expect(started('/nonexistent/nox-secrets')).rejects.toThrow(/ENOENT/);
    const root = tempRoot();
    writeSecret(root, 'ns', 'a', { k: 'v' });
    const s = await started(root);
    rmSync(root, { recursive: true });
    await s.rescan();
    // A scan that fails (the root is gone) is not an empty store.
    expect(s.get('ns', 'a', 'k')?.toString()).toBe('v');
  });

  it('parses labels in the Downward API format', () => {
    expect(parseLabels('a="1"\nb=2\n  c = "x \\"q\\"" \n# comment\nbad\n')).toEqual({
      a: '1',
      b: '2',
      c: 'x "q"',
    });
  });
});
