import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { definitions, loadSettings } from '../../sidecar/settings/settings.js';
import { scratchDir } from '../harness/process.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import {
  type Container,
  containerEnv,
  type DeploymentSpec,
  find,
  ids,
  type K8sObject,
  NAMESPACE,
  ofComponent,
  type PodSpec,
  render,
  renderFails,
  restrictedContainer,
  restrictedPod,
  valuesFile,
} from './helm-render.js';

/**
 * charts/nox's ext_authz service: the Deployment, Service, PodDisruptionBudget and optional
 * HorizontalPodAutoscaler, rendered and read as Kubernetes reads them; and the `helm test`
 * Pod, whose script is run here against a real nox-authz.
 */

const NAME = 'demo-nox-authz';
const selector = {
  'app.kubernetes.io/name': 'nox',
  'app.kubernetes.io/instance': 'demo',
  'app.kubernetes.io/component': 'authz',
};

function deployment(objects: K8sObject[]): { spec: DeploymentSpec; pod: PodSpec; container: Container } {
  const spec = find(objects, 'Deployment', NAME).spec as unknown as DeploymentSpec;
  expect(spec.template.spec.containers).toHaveLength(1);
  return { spec, pod: spec.template.spec, container: spec.template.spec.containers[0]! };
}

describe('charts/nox: the ext_authz service', () => {
  it('renders a Deployment, a Service and a PodDisruptionBudget with the defaults, and no HPA', async () => {
    const objects = await render('demo');
    expect(ids(ofComponent(objects, 'authz'))).toEqual([
      `Deployment/${NAMESPACE}/${NAME}`,
      `PodDisruptionBudget/${NAMESPACE}/${NAME}`,
      `Service/${NAMESPACE}/${NAME}`,
    ]);
    const { spec, pod, container } = deployment(objects);
    expect(spec.replicas).toBe(2);
    // Its own pods only: never the operator's of the same release.
    expect(spec.selector.matchLabels).toEqual(selector);
    expect(spec.template.metadata.labels).toMatchObject(selector);
    // An upgrade adds a ready pod before it removes one.
    expect(spec.strategy).toEqual({
      type: 'RollingUpdate',
      rollingUpdate: { maxUnavailable: 0, maxSurge: 1 },
    });
    expect(pod.serviceAccountName).toBe('demo-nox');
    expect(pod.automountServiceAccountToken).toBe(true);
    expect(container.name).toBe('nox-authz');
    expect(container.image).toBe('ghcr.io/nox-dev/nox:0.1.0');
    // The image's entrypoint (`nox <program>`) with the program named, as in the pasted in-pod container.
    expect(container.command).toBeUndefined();
    expect(container.args).toEqual(['authz']);

    const service = find(objects, 'Service', NAME).spec!;
    expect(service).toEqual({
      type: 'ClusterIP',
      selector,
      ports: [
        { name: 'grpc', port: 9001, targetPort: 'grpc', protocol: 'TCP', appProtocol: 'grpc' },
        { name: 'http-metrics', port: 9002, targetPort: 'http-metrics', protocol: 'TCP' },
      ],
    });
    // Each Service port reaches a container port of that name.
    for (const p of service.ports as { targetPort: string }[])
      expect(container.ports?.map((c) => c.name)).toContain(p.targetPort);
    expect(find(objects, 'PodDisruptionBudget', NAME).spec).toEqual({
      maxUnavailable: 1,
      selector: { matchLabels: selector },
    });
    expect(objects.filter((o) => o.kind === 'HorizontalPodAutoscaler')).toEqual([]);
  });

  it('listens on every address behind the Service, whatever the ConfigMap says for the in-pod sidecar', async () => {
    for (const args of [[], ['--set', 'sidecar.grpcHost=127.0.0.1', '--set', 'sidecar.httpHost=127.0.0.1']]) {
      const objects = await render('demo', args);
      const { container } = deployment(objects);
      const settings = loadSettings(containerEnv(objects, container));
      expect(settings.grpcHost).toBe('0.0.0.0');
      expect(settings.httpHost).toBe('0.0.0.0');
      expect(settings.grpcPort).toBe(container.ports?.find((p) => p.name === 'grpc')?.containerPort);
      expect(settings.httpPort).toBe(container.ports?.find((p) => p.name === 'http-metrics')?.containerPort);
      // The in-pod container (NOTES.txt) keeps the ConfigMap's loopback address.
      expect(find(objects, 'ConfigMap', 'demo-nox-sidecar').data?.NOX_GRPC_HOST).toBe('127.0.0.1');
    }
    // Every variable the Deployment sets is a sidecar setting, or Node's heap bound.
    const { container } = deployment(await render('demo'));
    const declared = new Set(Object.values(definitions).map((d) => d.env));
    for (const e of container.env ?? [])
      if (e.name !== 'NODE_OPTIONS') expect(declared.has(e.name), e.name).toBe(true);
    // V8 sizes its heap by the host, not the pod: bounded well under the memory limit.
    expect(container.env?.find((e) => e.name === 'NODE_OPTIONS')?.value).toBe('--max-old-space-size=320');
    expect((container.resources as { limits?: { memory?: string } } | undefined)?.limits?.memory).toBe(
      '512Mi',
    );
    const unbounded = deployment(await render('demo', ['--set', 'authz.maxOldSpaceMiB=0'])).container;
    expect(unbounded.env?.some((e) => e.name === 'NODE_OPTIONS')).toBe(false);
  });

  it('probes /readyz and /healthz, drains after a preStop pause within its grace period', async () => {
    const objects = await render('demo', ['--set', 'sidecar.drainTimeoutMs=20000']);
    const { pod, container } = deployment(objects);
    expect(container.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'http-metrics' });
    expect(container.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'http-metrics' });
    expect(container.lifecycle?.preStop?.sleep?.seconds).toBe(5);
    // preStop pause + drain deadline fit inside the grace period.
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(5 + 20);
    const none = deployment(await render('demo', ['--set', 'authz.preStopSleepSeconds=0'])).container;
    expect(none.lifecycle).toBeUndefined();
  });

  it('runs under the restricted Pod Security Standard, with its resources, spread over nodes', async () => {
    for (const args of [[], ['--set', 'sidecar.configSource=files', '--set', 'redisCluster.enabled=true']]) {
      const { pod, container } = deployment(await render('demo', args));
      expect(pod.securityContext).toEqual(restrictedPod);
      expect(container.securityContext).toEqual(restrictedContainer);
      for (const field of ['hostNetwork', 'hostPID', 'hostIPC'] as const) expect(pod[field]).toBeUndefined();
      // Every mount is read-only (the root filesystem is too).
      for (const m of container.volumeMounts ?? []) expect(m.readOnly, m.mountPath).toBe(true);
      expect(container.resources).toEqual({
        requests: { cpu: '100m', memory: '128Mi' },
        limits: { memory: '512Mi' },
      });
      expect(pod.topologySpreadConstraints).toEqual([
        {
          maxSkew: 1,
          topologyKey: 'kubernetes.io/hostname',
          whenUnsatisfiable: 'ScheduleAnyway',
          labelSelector: { matchLabels: selector },
        },
      ]);
    }
    // The files source needs no API token.
    const files = deployment(await render('demo', ['--set', 'sidecar.configSource=files'])).pod;
    expect(files.automountServiceAccountToken).toBe(false);
  });

  it('rolls the pods when a setting changes (the sidecar reads its ConfigMap at start only)', async () => {
    const checksum = async (args: string[]) =>
      deployment(await render('demo', args)).spec.template.metadata.annotations?.['checksum/config'];
    const base = await checksum([]);
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    expect(await checksum([])).toBe(base);
    expect(await checksum(['--set', 'sidecar.logLevel=debug'])).not.toBe(base);
  });

  it('takes replicas, autoscaling, spread, placement and annotations from values', async () => {
    const values = {
      authz: {
        replicas: 3,
        service: { type: 'LoadBalancer', annotations: { 'example.com/lb': 'internal' } },
        resources: { requests: { cpu: '500m', memory: '256Mi' }, limits: { memory: '1Gi' } },
        podDisruptionBudget: { enabled: true, maxUnavailable: 2 },
        topologySpreadConstraints: [
          { maxSkew: 1, topologyKey: 'topology.kubernetes.io/zone', whenUnsatisfiable: 'DoNotSchedule' },
        ],
        nodeSelector: { 'kubernetes.io/os': 'linux' },
        tolerations: [{ key: 'gateway', operator: 'Exists', effect: 'NoSchedule' }],
        affinity: { nodeAffinity: {} },
        priorityClassName: 'system-cluster-critical',
        podAnnotations: { 'prometheus.io/scrape': 'true' },
      },
    };
    const objects = await render('demo', ['-f', valuesFile(values)]);
    const { spec, pod, container } = deployment(objects);
    expect(spec.replicas).toBe(3);
    expect(spec.template.metadata.annotations).toMatchObject(values.authz.podAnnotations);
    expect(container.resources).toEqual(values.authz.resources);
    expect(pod).toMatchObject({
      nodeSelector: values.authz.nodeSelector,
      tolerations: values.authz.tolerations,
      affinity: values.authz.affinity,
      priorityClassName: 'system-cluster-critical',
    });
    expect(pod.topologySpreadConstraints).toEqual([
      { ...values.authz.topologySpreadConstraints[0], labelSelector: { matchLabels: selector } },
    ]);
    const svc = find(objects, 'Service', NAME);
    expect(svc.spec?.type).toBe('LoadBalancer');
    expect(svc.metadata.annotations).toEqual(values.authz.service.annotations);
    expect(find(objects, 'PodDisruptionBudget', NAME).spec?.maxUnavailable).toBe(2);

    // Autoscaling: an HPA owns the replica count, and a PDB protects the pods it makes.
    const hpa = await render('demo', [
      '--set',
      'authz.autoscaling.enabled=true',
      '--set',
      'authz.autoscaling.maxReplicas=6',
    ]);
    expect(deployment(hpa).spec.replicas).toBeUndefined();
    expect(find(hpa, 'HorizontalPodAutoscaler', NAME).spec).toEqual({
      scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: NAME },
      minReplicas: 2,
      maxReplicas: 6,
      metrics: [
        {
          type: 'Resource',
          resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 70 } },
        },
      ],
    });
    expect(hpa.some((o) => o.kind === 'PodDisruptionBudget' && o.metadata.name === NAME)).toBe(true);

    // One fixed replica: no PDB (maxUnavailable 1 of 1 keeps nothing).
    const single = await render('demo', ['--set', 'authz.replicas=1']);
    expect(ofComponent(single, 'authz').map((o) => o.kind)).toEqual(['Service', 'Deployment']);
    expect(
      await renderFails([
        '--set',
        'authz.autoscaling.enabled=true',
        '--set',
        'authz.autoscaling.minReplicas=5',
        '--set',
        'authz.autoscaling.maxReplicas=3',
      ]),
    ).toContain('authz.autoscaling.minReplicas=5 is above maxReplicas=3');
  });

  it('renders nothing of the ext_authz service, nor its test, with authz.enabled=false', async () => {
    const objects = await render('demo', ['--set', 'authz.enabled=false']);
    expect(ofComponent(objects, 'authz')).toEqual([]);
    expect(ofComponent(objects, 'test')).toEqual([]);
    expect(find(objects, 'ConfigMap', 'demo-nox-sidecar')).toBeDefined();
  });
});

describe('charts/nox: helm test', () => {
  let sidecar: Sidecar;
  beforeAll(async () => {
    // A real nox-authz whose only policy is for another host: the test's host has none.
    const dir = scratchDir('helm-test-policy');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'policy.yaml'),
      stringify({
        apiVersion: 'nox.dev/v1alpha1',
        kind: 'AccessPolicy',
        metadata: { name: 'app', namespace: 'default' },
        spec: { match: { hosts: ['app.example.com'] }, defaultAction: 'Deny', rules: [] },
      }),
    );
    sidecar = await startSidecar({ policyPath: dir });
  });
  afterAll(async () => {
    await sidecar?.stop();
  });

  const testPod = async (args: string[] = []) => {
    const objects = await render('demo', args);
    const [pod] = ofComponent(objects, 'test');
    expect(pod?.kind).toBe('Pod');
    return { pod: pod!, spec: pod!.spec as unknown as PodSpec };
  };

  /** Runs the test Pod's command here, as its container would, with the Service's addresses replaced by the local sidecar's. */
  const runTestPod = async (c: Container, env: Record<string, string> = {}) => {
    const podEnv = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? '']));
    const [cmd, ...args] = c.command!;
    expect(cmd).toBe('node');
    return new Promise<{ code: number; out: string }>((resolve) => {
      execFile(
        process.execPath,
        args,
        {
          env: {
            ...podEnv,
            NOX_TEST_GRPC: `127.0.0.1:${sidecar.grpcPort}`,
            NOX_TEST_HTTP: `http://127.0.0.1:${sidecar.httpPort}`,
            ...env,
          },
          timeout: 30_000,
        },
        (err, stdout, stderr) =>
          resolve({ code: err ? ((err.code as number) ?? 1) : 0, out: `${stdout}${stderr}` }),
      );
    });
  };

  it('is a test hook Pod of the nox image, pointed at the Service, under the restricted standard', async () => {
    const { pod, spec } = await testPod();
    expect(pod.metadata.name).toBe('demo-nox-test-check');
    expect(pod.metadata.annotations).toEqual({
      'helm.sh/hook': 'test',
      'helm.sh/hook-delete-policy': 'before-hook-creation,hook-succeeded',
    });
    expect(spec.restartPolicy).toBe('Never');
    expect(spec.automountServiceAccountToken).toBe(false);
    expect(spec.securityContext).toEqual(restrictedPod);
    const [c] = spec.containers;
    expect(c?.image).toBe('ghcr.io/nox-dev/nox:0.1.0');
    expect(c?.securityContext).toEqual(restrictedContainer);
    expect(Object.fromEntries((c?.env ?? []).map((e) => [e.name, e.value]))).toEqual({
      NOX_TEST_GRPC: `${NAME}.${NAMESPACE}.svc:9001`,
      NOX_TEST_HTTP: `http://${NAME}.${NAMESPACE}.svc:9002`,
      NOX_TEST_HOST: 'helm-test.nox.invalid',
      NOX_TEST_EXPECT: 'NO_POLICY',
    });
  });

  it('sends a real Check and passes on the decision it expects, fails on any other', async () => {
    const { spec } = await testPod();
    const c = spec.containers[0]!;
    const pass = await runTestPod(c);
    expect(pass.code, pass.out).toBe(0);
    expect(pass.out).toContain('Check for http://helm-test.nox.invalid/: NO_POLICY (code 7, HTTP 403)');
    expect(pass.out).toContain('PASS');

    // A different expectation (values tests.check.expect) fails on the same answer.
    const { spec: allow } = await testPod(['--set', 'tests.check.expect=ALLOW']);
    const wrong = await runTestPod(allow.containers[0]!);
    expect(wrong.code, wrong.out).toBe(1);
    expect(wrong.out).toContain('expected ALLOW, the ext_authz service decided NO_POLICY');

    // The host the policy covers is decided by it (a deny by its defaultAction), not NO_POLICY.
    const covered = await runTestPod(c, { NOX_TEST_HOST: 'app.example.com' });
    expect(covered.code, covered.out).toBe(1);
    expect(covered.out).not.toContain('decided NO_POLICY');

    // Nothing listening: a failure, never a pass.
    const down = await runTestPod(c, { NOX_TEST_GRPC: '127.0.0.1:1', NOX_TEST_HTTP: 'http://127.0.0.1:1' });
    expect(down.code).toBe(1);
    expect(down.out).toContain('FAIL');
  }, 60_000);

  it('renders no test with tests.enabled=false', async () => {
    expect(ofComponent(await render('demo', ['--set', 'tests.enabled=false']), 'test')).toEqual([]);
  });
});
