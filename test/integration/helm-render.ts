import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { helm } from '../harness/helm.js';
import { scratchDir } from '../harness/process.js';

/** What the helm-*.test.ts files share: rendering charts/nox and finding objects in it. */

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  data?: Record<string, string>;
  spec?: Record<string, unknown>;
}

export const NAMESPACE = 'nox-system';

export function parseObjects(yaml: string): K8sObject[] {
  const docs = parseAllDocuments(yaml);
  for (const d of docs) expect(d.errors, String(d.errors)).toEqual([]);
  return docs.map((d) => d.toJS() as K8sObject | null).filter((o): o is K8sObject => o !== null);
}

/** `helm template <release> charts/nox --namespace nox-system <args>` → the objects (parsed, not grepped). */
export async function render(release: string, args: string[] = []): Promise<K8sObject[]> {
  const res = await helm(['template', release, 'charts/nox', '--namespace', NAMESPACE, ...args]);
  expect(res.code, res.stderr).toBe(0);
  return parseObjects(res.stdout);
}

/** `helm template` that must fail: its stderr. */
export async function renderFails(args: string[]): Promise<string> {
  const res = await helm(['template', 'demo', 'charts/nox', '--namespace', NAMESPACE, ...args]);
  expect(res.code, `helm template ${args.join(' ')} succeeded`).not.toBe(0);
  return res.stderr;
}

/** Values as a file (`-f`). */
export function valuesFile(values: unknown): string {
  const path = join(scratchDir('helm-values'), 'values.yaml');
  writeFileSync(path, JSON.stringify(values));
  return path;
}

export function find(objects: K8sObject[], kind: string, name: string): K8sObject {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o)
    throw new Error(`no ${kind} ${name} in ${objects.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return o;
}

export const ofComponent = (objects: K8sObject[], component: string) =>
  objects.filter((o) => o.metadata.labels?.['app.kubernetes.io/component'] === component);

export const ids = (objects: K8sObject[]) =>
  objects
    .map((o) => `${o.kind}/${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`)
    .sort();

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: { name: string; key: string };
    fieldRef?: { fieldPath: string };
  };
}

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string } }[];
  ports?: { name: string; containerPort: number }[];
  readinessProbe?: { httpGet?: { path: string; port: string } };
  livenessProbe?: { httpGet?: { path: string; port: string } };
  lifecycle?: { preStop?: { sleep?: { seconds: number } } };
  resources?: unknown;
  securityContext?: Record<string, unknown>;
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}

export interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  securityContext?: Record<string, unknown>;
  terminationGracePeriodSeconds?: number;
  restartPolicy?: string;
  containers: Container[];
  volumes?: {
    name: string;
    secret?: { secretName: string; items?: { key: string; path: string }[] };
    configMap?: { name: string };
  }[];
  topologySpreadConstraints?: Record<string, unknown>[];
  hostNetwork?: boolean;
  hostPID?: boolean;
  hostIPC?: boolean;
}

export interface DeploymentSpec {
  replicas?: number;
  selector: { matchLabels: Record<string, string> };
  strategy?: unknown;
  template: {
    metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
    spec: PodSpec;
  };
}

/** The container's environment: ConfigMap (envFrom) first, then env, as the kubelet builds it; Secret refs as `secret:<name>/<key>`. */
export function containerEnv(objects: K8sObject[], c: Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of c.envFrom ?? []) {
    const cm = find(objects, 'ConfigMap', from.configMapRef!.name);
    Object.assign(env, cm.data);
  }
  for (const e of c.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef;
    env[e.name] = ref ? `secret:${ref.name}/${ref.key}` : (e.value ?? '');
  }
  return env;
}

/** The restricted Pod Security Standard, as every Nox container carries it. */
export const restrictedContainer = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};
export const restrictedPod = { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } };
