import {
  chmodSync,
  chownSync,
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join, normalize } from 'node:path';
import type { V1Container, V1Pod, V1Volume } from '@kubernetes/client-node';
import { configError, type EnvSources, fieldValue, isRoot, type PodState } from './pod.js';

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

/** chown -R (symlinks themselves, not their targets). */
export function chownTree(path: string, owner: Owner): void {
  const walk = (p: string) => {
    const st = lstatSync(p);
    if (st.uid !== owner.uid || st.gid !== owner.gid) lchownSync(p, owner.uid, owner.gid);
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
  };
  walk(path);
}

/** Owner of the pod's writable volumes: the pod's runAsUser (or its first container's) and fsGroup. */
export function volumeOwner(pod: V1Pod): { uid: number; gid: number } | undefined {
  if (!isRoot()) return undefined;
  const psc = pod.spec?.securityContext;
  const uid = psc?.runAsUser ?? pod.spec?.containers?.[0]?.securityContext?.runAsUser ?? 0;
  const gid = psc?.fsGroup ?? psc?.runAsGroup ?? pod.spec?.containers?.[0]?.securityContext?.runAsGroup ?? 0;
  if (uid === 0 && gid === 0) return undefined;
  return { uid, gid };
}

/** What the kubelet gives the volume code: its node, its scratch root and its API access. */
export interface VolumeContext {
  nodeName: string;
  /** PVC directories live here, outside any pod's directory (they outlive the pod). */
  root: string;
  sources: EnvSources;
  api: (method: string, path: string, body?: unknown) => Promise<{ status: number; body: unknown }>;
  stopped: () => boolean;
}

/**
 * A pod's volumes as the kubelet makes them: ConfigMap, Secret, projected (service-account
 * token, CA bundle, downward API), downward API, emptyDir and PVC volumes as directories,
 * kept current, and the mount mapping from container paths to those directories.
 */
export function podVolumes(k: VolumeContext) {
  const volumeDir = (p: PodState, v: V1Volume): string => {
    if (v.persistentVolumeClaim) return join(k.root, 'pvc', p.namespace, v.persistentVolumeClaim.claimName);
    return join(p.dir, 'volumes', v.name);
  };

  type DownwardItem = { path: string; fieldRef?: { fieldPath: string }; mode?: number };
  const downwardFiles = (p: PodState, items: DownwardItem[], mode: number | undefined) => {
    const files = new Map<string, FileSpec>();
    for (const item of items)
      if (item.fieldRef)
        files.set(item.path, {
          data: fieldValue(p, item.fieldRef.fieldPath, k.nodeName),
          mode: item.mode ?? mode ?? 0o644,
        });
    return files;
  };

  const keyFiles = (
    data: Record<string, string>,
    items: { key: string; path: string; mode?: number }[] | undefined,
    defaultMode: number | undefined,
    what: string,
  ) => {
    const files = new Map<string, FileSpec>();
    const entries: { key: string; path: string; mode?: number }[] =
      items ?? Object.keys(data).map((key) => ({ key, path: key }));
    for (const item of entries) {
      const value = data[item.key];
      if (value === undefined) throw configError(`key ${item.key} not found in ${what}`);
      files.set(item.path, { data: value, mode: item.mode ?? defaultMode ?? 0o644 });
    }
    return files;
  };

  /** A ConfigMap or Secret volume's files (undefined while the object is missing); undefined for other volumes. */
  const objectVolume = async (p: PodState, v: V1Volume) => {
    const ref = v.configMap
      ? { what: 'configmap', name: v.configMap.name!, src: v.configMap, secret: false }
      : v.secret
        ? { what: 'secret', name: v.secret.secretName!, src: v.secret, secret: true }
        : undefined;
    if (!ref) return undefined;
    const data = ref.secret
      ? await k.sources.secret(p.namespace, ref.name)
      : await k.sources.configMap(p.namespace, ref.name);
    return {
      what: ref.what,
      name: ref.name,
      optional: ref.src.optional === true,
      files: data && keyFiles(data, ref.src.items, ref.src.defaultMode, ref.name),
    };
  };

  /** Materialises the pod's volumes; throws a config error while a referenced object is missing. */
  const setupVolumes = async (p: PodState) => {
    const owner = volumeOwner(p.pod);
    for (const v of p.pod.spec?.volumes ?? []) {
      const dir = volumeDir(p, v);
      const obj = await objectVolume(p, v);
      if (obj) {
        if (obj.files === undefined) {
          if (obj.optional) continue;
          throw configError(`${obj.what} "${obj.name}" not found`);
        }
        syncDir(dir, obj.files, owner);
      } else if (v.downwardAPI) {
        syncDir(dir, downwardFiles(p, v.downwardAPI.items ?? [], v.downwardAPI.defaultMode), owner);
      } else if (v.projected) {
        // The service-account volume (kube-api-access-*) and friends: files from several sources.
        const files = new Map<string, FileSpec>();
        const mode = v.projected.defaultMode;
        for (const src of v.projected.sources ?? []) {
          if (src.serviceAccountToken) {
            const sa = p.pod.spec?.serviceAccountName ?? 'default';
            const res = await k.api('POST', `/api/v1/namespaces/${p.namespace}/serviceaccounts/${sa}/token`, {
              apiVersion: 'authentication.k8s.io/v1',
              kind: 'TokenRequest',
              spec: {
                audiences: src.serviceAccountToken.audience ? [src.serviceAccountToken.audience] : [],
                expirationSeconds: src.serviceAccountToken.expirationSeconds ?? 3607,
                boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: p.name, uid: p.uid },
              },
            });
            if (res.status !== 201 && res.status !== 200)
              throw configError(`token for serviceaccount ${sa}: HTTP ${res.status}`);
            files.set(src.serviceAccountToken.path, {
              data: (res.body as { status: { token: string } }).status.token,
              mode: 0o600,
            });
          } else if (src.configMap || src.secret) {
            const ref = (src.configMap ?? src.secret)!;
            const data = src.configMap
              ? await k.sources.configMap(p.namespace, ref.name!)
              : await k.sources.secret(p.namespace, ref.name!);
            if (data === undefined) {
              if (ref.optional) continue;
              throw configError(`${src.configMap ? 'configmap' : 'secret'} "${ref.name}" not found`);
            }
            for (const [k, f] of keyFiles(data, ref.items, mode, ref.name!)) files.set(k, f);
          } else if (src.downwardAPI) {
            for (const [k, f] of downwardFiles(p, src.downwardAPI.items ?? [], mode)) files.set(k, f);
          }
        }
        syncDir(dir, files, owner);
      } else if (v.emptyDir) {
        if (!existsSync(dir)) {
          // What the kubelet makes: world-writable (and, with fsGroup, that group's).
          mkdirSync(dir, { recursive: true });
          chmodSync(dir, 0o777);
          if (owner) chownTree(dir, owner);
        }
      } else if (v.persistentVolumeClaim) {
        if (!existsSync(dir)) {
          mkdirSync(dir, { recursive: true });
          chmodSync(dir, 0o777);
        }
        // fsGroup's recursive ownership change when the volume is mounted for a pod.
        if (owner && !p.owned.has(dir)) chownTree(dir, owner);
        p.owned.add(dir);
      } else {
        throw configError(
          `volume ${v.name}: only configMap, secret, projected, downwardAPI, emptyDir and PVC volumes are emulated`,
        );
      }
      const link = join(p.short, v.name);
      if (!lstatExists(link)) symlinkSync(dir, link);
    }
  };

  /** The kubelet refreshes downward API files when the pod's metadata changes. */
  const refreshDownward = (p: PodState) => {
    if (p.terminating || p.gone || k.stopped()) return;
    const owner = volumeOwner(p.pod);
    for (const v of p.pod.spec?.volumes ?? []) {
      const dir = volumeDir(p, v);
      if (!existsSync(dir)) continue; // not set up yet: setupVolumes writes the current values
      const files = v.downwardAPI
        ? downwardFiles(p, v.downwardAPI.items ?? [], v.downwardAPI.defaultMode)
        : new Map(
            (v.projected?.sources ?? []).flatMap((s) =>
              s.downwardAPI ? [...downwardFiles(p, s.downwardAPI.items ?? [], v.projected?.defaultMode)] : [],
            ),
          );
      for (const [path, f] of files) writeFileAtomic(join(dir, path), f.data, f.mode, owner);
    }
  };

  /**
   * The kubelet's periodic volume sync: ConfigMap and Secret volumes follow their objects
   * (a real kubelet takes up to a minute; here every `volumeSyncMs`). Files change by rename,
   * as the kubelet's atomic writer does; a missing object leaves the files as they are.
   */
  const refreshConfigVolumes = async (p: PodState) => {
    if (p.terminating || p.gone || k.stopped()) return;
    const owner = volumeOwner(p.pod);
    for (const v of p.pod.spec?.volumes ?? []) {
      const dir = volumeDir(p, v);
      if (!existsSync(dir)) continue;
      // A missing object leaves the files as they are.
      const files = (await objectVolume(p, v))?.files;
      if (files) syncDir(dir, files, owner);
    }
  };
  /** Container path → host path, through the container's volume mounts (longest prefix wins). */
  const hostPath = (p: PodState, c: V1Container, path: string): string | undefined => {
    let best: { mount: string; dir: string } | undefined;
    for (const m of c.volumeMounts ?? []) {
      const mount = m.mountPath.replace(/\/+$/, '') || '/';
      if (path !== mount && !path.startsWith(`${mount}/`)) continue;
      if (best && best.mount.length >= mount.length) continue;
      if (!p.pod.spec?.volumes?.some((v) => v.name === m.name)) continue;
      best = { mount, dir: join(p.short, m.name, m.subPath ?? '') };
    }
    return best ? join(best.dir, path.slice(best.mount.length)) : undefined;
  };
  const mapArg = (p: PodState, c: V1Container, arg: string) =>
    arg.startsWith('/') ? (hostPath(p, c, arg) ?? arg) : arg;

  return { setupVolumes, refreshDownward, refreshConfigVolumes, hostPath, mapArg };
}

function lstatExists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
