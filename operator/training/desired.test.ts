import { describe, expect, it } from 'vitest';
import type { RiskModel } from '../../common/resources/types.gen.js';
import { trainingChildren, trainingName } from './desired.js';

const riskModel = (training?: RiskModel['spec']['training']): RiskModel => ({
  apiVersion: 'nox.dev/v1alpha1',
  kind: 'RiskModel',
  metadata: { name: 'api-risk', namespace: 'shop', uid: 'u-1', generation: 3 },
  spec: {
    mode: 'Enforce',
    failureMode: 'Closed',
    model: { configMapRef: { name: 'api-risk-model', key: 'model.onnx' } },
    features: ['subjectRate1m', 'hourOfDay'],
    thresholds: { challenge: 0.7, deny: 0.9, block: 0.97 },
    blockDuration: '15m',
    ...(training ? { training } : {}),
  },
});

const training = {
  schedule: '0 3 * * *',
  lookback: '14d',
  holdout: '36h',
  contamination: 0.002,
  minEvents: 5000,
  auditDatabase: { name: 'nox-postgres-app', key: 'ro-uri' },
  suspend: false,
};

describe('trainingChildren', () => {
  it('is nothing without training', () => {
    expect(trainingChildren(riskModel(), { image: 'trainer:1' })).toBeUndefined();
  });

  it("runs the trainer on the schedule with the RiskModel's features, window and thresholds, publishing to its ConfigMap", () => {
    const c = trainingChildren(riskModel(training), { image: 'trainer:1' })!;
    const job = c.cronJob.spec!.jobTemplate.spec!;
    const pod = job.template.spec!;
    const container = pod.containers[0]!;
    expect(c.cronJob.metadata!.name).toBe('api-risk-training');
    expect(c.cronJob.spec!.schedule).toBe('0 3 * * *');
    expect(c.cronJob.spec!.concurrencyPolicy).toBe('Forbid');
    expect(container.image).toBe('trainer:1');
    expect(container.args).toEqual([
      '--risk-model',
      'shop/api-risk',
      '--features',
      'subjectRate1m,hourOfDay',
      '--lookback-hours',
      '336',
      '--holdout-hours',
      '36',
      '--contamination',
      '0.002',
      '--min-events',
      '5000',
      '--thresholds',
      '{"challenge":0.7,"deny":0.9,"block":0.97}',
      '--publish',
      'shop/api-risk-model/model.onnx',
      '--report-file',
      '/dev/termination-log',
    ]);
    // The connection string (a password in it) from the Secret, never on the command line.
    expect(container.env).toEqual([
      { name: 'NOX_DATABASE_URL', valueFrom: { secretKeyRef: { name: 'nox-postgres-app', key: 'ro-uri' } } },
    ]);
    expect(container.args!.join(' ')).not.toContain('postgres://');
    // Too few events and a model no better are answers, not failures to retry.
    expect(job.podFailurePolicy!.rules[0]).toMatchObject({
      action: 'FailJob',
      onExitCodes: { values: [3, 4] },
    });
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532 });
    expect(container.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
    });
    for (const o of [c.cronJob, c.serviceAccount, c.role, c.roleBinding])
      expect(o.metadata!.ownerReferences).toEqual([
        expect.objectContaining({ kind: 'RiskModel', uid: 'u-1', controller: true }),
      ]);
  });

  it('lets the trainer read and patch its one ConfigMap and nothing else; the ConfigMap carries the label the sidecars watch, and no owner', () => {
    const c = trainingChildren(riskModel(training), { image: 'trainer:1' })!;
    expect(c.role.rules).toEqual([
      {
        apiGroups: [''],
        resources: ['configmaps'],
        resourceNames: ['api-risk-model'],
        verbs: ['get', 'patch'],
      },
    ]);
    expect(c.roleBinding.subjects).toEqual([
      { kind: 'ServiceAccount', name: 'api-risk-training', namespace: 'shop' },
    ]);
    expect(c.cronJob.spec!.jobTemplate.spec!.template.spec!.serviceAccountName).toBe('api-risk-training');
    expect(c.configMap.metadata).toEqual({
      name: 'api-risk-model',
      namespace: 'shop',
      labels: { 'nox.dev/risk-model': 'true' },
    });
  });

  it('keeps names within what a CronJob allows (52 characters)', () => {
    const long = trainingName('a'.repeat(60));
    expect(long.length).toBeLessThanOrEqual(52);
    expect(long.endsWith('-training')).toBe(true);
    expect(trainingName(`${'b'.repeat(42)}-x-y`)).toMatch(/^b+-training$/);
  });
});
