import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { helm } from '../harness/helm.js';

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
  automountServiceAccountToken?: boolean;
}

/** `helm template` → the objects it renders (the YAML is parsed, not grepped). */
async function render(release: string, args: string[] = []): Promise<K8sObject[]> {
  const res = await helm(['template', release, 'charts/nox', '--namespace', 'nox-system', ...args]);
  expect(res.code, res.stderr).toBe(0);
  const docs = parseAllDocuments(res.stdout);
  for (const d of docs) expect(d.errors, String(d.errors)).toEqual([]);
  return docs.map((d) => d.toJS() as K8sObject | null).filter((o): o is K8sObject => o !== null);
}

function find(objects: K8sObject[], kind: string, name: string): K8sObject {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o)
    throw new Error(`no ${kind} ${name} in ${objects.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return o;
}

describe('charts/nox', () => {
  it('passes helm lint --strict', async () => {
    const res = await helm(['lint', '--strict', 'charts/nox']);
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    expect(res.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
    expect(res.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
  });

  it('has the chart metadata the release expects', async () => {
    const res = await helm(['show', 'chart', 'charts/nox']);
    expect(res.code, res.stderr).toBe(0);
    expect(parse(res.stdout)).toMatchObject({
      apiVersion: 'v2',
      name: 'nox',
      version: '0.1.0',
      appVersion: '0.1.0',
    });
  });

  it('renders a ServiceAccount and the sidecar ConfigMap with the default values', async () => {
    const objects = await render('demo');
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual([
      'ConfigMap/demo-nox-sidecar',
      'ServiceAccount/demo-nox',
    ]);
    for (const o of objects) {
      expect(o.apiVersion).toBe('v1');
      expect(o.metadata.namespace).toBe('nox-system');
      expect(o.metadata.labels).toMatchObject({
        'app.kubernetes.io/name': 'nox',
        'app.kubernetes.io/instance': 'demo',
        'app.kubernetes.io/version': '0.1.0',
        'app.kubernetes.io/managed-by': 'Helm',
        'helm.sh/chart': 'nox-0.1.0',
      });
    }
    expect(find(objects, 'ServiceAccount', 'demo-nox').automountServiceAccountToken).toBe(true);

    const cm = find(objects, 'ConfigMap', 'demo-nox-sidecar');
    expect(cm.data).toEqual({
      NOX_GRPC_HOST: '127.0.0.1',
      NOX_GRPC_PORT: '9001',
      NOX_HTTP_HOST: '0.0.0.0',
      NOX_HTTP_PORT: '9002',
      NOX_CHECK_DEADLINE_MS: '150',
      NOX_DRAIN_TIMEOUT_MS: '10000',
      NOX_LOG_LEVEL: 'info',
      NOX_POLICY_FILE: '/etc/nox/policy.yaml',
      'policy.yaml': 'denyPaths: []\n',
    });
  });

  it('takes ports, policy, names and labels from values', async () => {
    const objects = await render('nox', [
      '--set',
      'sidecar.grpcPort=7001',
      '--set',
      'sidecar.grpcHost=0.0.0.0',
      '--set',
      'sidecar.logLevel=debug',
      '--set',
      'sidecar.policyMountPath=/config/',
      '--set-json',
      'sidecar.policy={"denyPaths":["/admin","/internal"]}',
      '--set',
      'serviceAccount.name=authz',
      '--set',
      'serviceAccount.annotations.example\\.com/role=authz',
      '--set',
      'commonLabels.team=platform',
    ]);
    // A release named like the chart is not prefixed twice.
    const cm = find(objects, 'ConfigMap', 'nox-sidecar');
    expect(cm.data).toMatchObject({
      NOX_GRPC_HOST: '0.0.0.0',
      NOX_GRPC_PORT: '7001',
      NOX_LOG_LEVEL: 'debug',
      NOX_POLICY_FILE: '/config/policy.yaml',
    });
    // The policy file is YAML the sidecar's compiler reads.
    expect(parse(cm.data?.['policy.yaml'] ?? '')).toEqual({ denyPaths: ['/admin', '/internal'] });
    expect(cm.metadata.labels?.team).toBe('platform');

    const sa = find(objects, 'ServiceAccount', 'authz') as K8sObject & {
      metadata: { annotations?: Record<string, string> };
    };
    expect(sa.metadata.annotations).toEqual({ 'example.com/role': 'authz' });
  });

  it('leaves the ServiceAccount out when serviceAccount.create=false', async () => {
    const objects = await render('demo', ['--set', 'serviceAccount.create=false']);
    expect(objects.map((o) => o.kind)).toEqual(['ConfigMap']);
  });

  it('rejects values that break the schema', async () => {
    for (const [set, field] of [
      ['sidecar.grpcPort=70000', 'grpcPort'],
      ['sidecar.logLevel=loud', 'logLevel'],
      ['image.pullPolicy=Sometimes', 'pullPolicy'],
    ] as const) {
      const res = await helm(['template', 'demo', 'charts/nox', '--set', set]);
      expect(res.code, set).not.toBe(0);
      expect(res.stderr).toContain(field);
    }
  });
});
