import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { testLog } from '../harness/log.js';
import { type ApiCredentials, api, ensure } from './api.js';

/** The default StorageClass of the node; its claims become directories on the node's disk. */
export const STORAGE_CLASS = 'nox-local';
const PROVISIONER = 'nox.dev/node-local-dir';

interface Claim {
  metadata: { name: string; namespace: string; uid: string };
  spec: {
    storageClassName?: string;
    volumeName?: string;
    accessModes?: string[];
    resources?: { requests?: { storage?: string } };
  };
  status?: { phase?: string };
}
interface Volume {
  metadata: { name: string; annotations?: Record<string, string> };
  spec: { hostPath?: { path: string } };
  status?: { phase?: string };
}

export interface Provisioner {
  /** Volumes made so far (claim `namespace/name` → directory). */
  readonly made: ReadonlyMap<string, string>;
  stop(): void;
}

/**
 * A dynamic provisioner in the test process, doing what local-path-provisioner does: every
 * Pending claim of the default class gets a PersistentVolume on a fresh directory under the
 * node's directory, pre-bound to the claim (the controller-manager's binder completes the
 * binding), and a Released volume of ours is deleted with its directory, as the class's
 * Delete policy says. It polls once a second: a claim waits at most that long.
 */
export async function startProvisioner(creds: ApiCredentials, volumesDir: string): Promise<Provisioner> {
  await ensure(creds, '/apis/storage.k8s.io/v1/storageclasses', {
    metadata: { name: STORAGE_CLASS, annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } },
    provisioner: PROVISIONER,
    reclaimPolicy: 'Delete',
    volumeBindingMode: 'Immediate',
  });
  const made = new Map<string, string>();
  let busy = false;
  const pass = async () => {
    const claims = await api<{ items: Claim[] }>(creds, 'GET', '/api/v1/persistentvolumeclaims');
    for (const c of claims.body.items ?? []) {
      if (c.status?.phase !== 'Pending' || c.spec.volumeName || c.spec.storageClassName !== STORAGE_CLASS)
        continue;
      const { name, namespace, uid } = c.metadata;
      const path = join(volumesDir, `${namespace}-${name}-${uid.slice(0, 8)}`);
      mkdirSync(path, { recursive: true });
      // Any pod user may write its volume, as with local-path-provisioner (mkdir's mode obeys the umask).
      chmodSync(path, 0o777);
      const res = await api(creds, 'POST', '/api/v1/persistentvolumes', {
        metadata: { name: `pvc-${uid}`, annotations: { 'pv.kubernetes.io/provisioned-by': PROVISIONER } },
        spec: {
          capacity: { storage: c.spec.resources?.requests?.storage ?? '1Gi' },
          accessModes: c.spec.accessModes ?? ['ReadWriteOnce'],
          persistentVolumeReclaimPolicy: 'Delete',
          storageClassName: STORAGE_CLASS,
          claimRef: { apiVersion: 'v1', kind: 'PersistentVolumeClaim', namespace, name, uid },
          hostPath: { path, type: 'Directory' },
        },
      });
      if (res.status === 201) {
        made.set(`${namespace}/${name}`, path);
        testLog('node provisioner: %s/%s → %s', namespace, name, path);
      }
    }
    const volumes = await api<{ items: Volume[] }>(creds, 'GET', '/api/v1/persistentvolumes');
    for (const v of volumes.body.items ?? []) {
      if (v.metadata.annotations?.['pv.kubernetes.io/provisioned-by'] !== PROVISIONER) continue;
      if (v.status?.phase !== 'Released' && v.status?.phase !== 'Failed') continue;
      const del = await api(creds, 'DELETE', `/api/v1/persistentvolumes/${v.metadata.name}`);
      if ((del.status === 200 || del.status === 404) && v.spec.hostPath?.path.startsWith(volumesDir)) {
        rmSync(v.spec.hostPath.path, { recursive: true, force: true });
      }
    }
  };
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    pass()
      .catch((e) => testLog('node provisioner pass failed: %s', (e as Error).message))
      .finally(() => {
        busy = false;
      });
  }, 1000);
  timer.unref();
  return { made, stop: () => clearInterval(timer) };
}
