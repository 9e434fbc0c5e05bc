import type {
  V1ConfigMap,
  V1CronJob,
  V1Role,
  V1RoleBinding,
  V1ServiceAccount,
} from '@kubernetes/client-node';
import { RISK_MODEL_LABEL } from '../../common/resources/kinds/riskModel.js';
import type { RiskModel } from '../../common/resources/types.gen.js';
import { controllerRef } from '../runtime/controller.js';

/** The label on a RiskModel's training objects (and its Jobs and pods): the RiskModel's name. */
export const TRAINING_LABEL = 'nox.dev/training';

export interface TrainingSettings {
  /** The trainer's image (images/trainer). */
  readonly image: string;
}

export interface TrainingChildren {
  readonly serviceAccount: V1ServiceAccount;
  readonly role: V1Role;
  readonly roleBinding: V1RoleBinding;
  /** Created with the label only, so the trainer may publish with `patch` on it alone. */
  readonly configMap: V1ConfigMap;
  readonly cronJob: V1CronJob;
}

/** Kubernetes names: a CronJob's at most 52 characters (its Jobs get an 11-character suffix). */
export function trainingName(riskModel: string): string {
  const suffix = '-training';
  return `${riskModel.slice(0, 52 - suffix.length).replace(/-+$/, '')}${suffix}`;
}

const durationHours = (d: string): number => {
  const units: Record<string, number> = { ms: 1 / 3_600_000, s: 1 / 3600, m: 1 / 60, h: 1, d: 24, w: 168 };
  let hours = 0;
  for (const [, n, u] of d.matchAll(/(\d+)(ms|s|m|h|d|w)/g)) hours += Number(n) * units[u!]!;
  return hours;
};

/**
 * What a RiskModel's `training` asks for, as a pure function of it: a CronJob running the
 * trainer (images/trainer) on the schedule, under a ServiceAccount whose Role lets it read and
 * patch the one model ConfigMap and nothing else; the audit log's connection string comes from
 * the named Secret as an environment variable (never an argument); the report goes to the
 * termination message. Every object but the ConfigMap belongs to the RiskModel (garbage
 * collected with it); the ConfigMap may be the user's, and its models outlive a RiskModel.
 */
export function trainingChildren(rm: RiskModel, settings: TrainingSettings): TrainingChildren | undefined {
  const training = rm.spec.training;
  const ref = rm.spec.model.configMapRef;
  if (!training || !ref) return undefined;
  const namespace = rm.metadata.namespace ?? 'default';
  const name = trainingName(rm.metadata.name);
  const labels = {
    'app.kubernetes.io/name': 'nox-trainer',
    'app.kubernetes.io/part-of': 'nox',
    [TRAINING_LABEL]: rm.metadata.name,
  };
  const owned = {
    name,
    namespace,
    labels,
    ownerReferences: [controllerRef(rm as Parameters<typeof controllerRef>[0])],
  };
  const args = [
    '--risk-model',
    `${namespace}/${rm.metadata.name}`,
    '--features',
    rm.spec.features.join(','),
    '--lookback-hours',
    String(durationHours(training.lookback ?? '7d')),
    '--holdout-hours',
    String(durationHours(training.holdout ?? '1d')),
    '--contamination',
    String(training.contamination ?? 0.001),
    '--min-events',
    String(training.minEvents ?? 10000),
    '--thresholds',
    JSON.stringify(rm.spec.thresholds),
    '--publish',
    `${namespace}/${ref.name}/${ref.key}`,
    '--report-file',
    '/dev/termination-log',
  ];
  return {
    serviceAccount: {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: owned,
    },
    role: {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: owned,
      rules: [
        { apiGroups: [''], resources: ['configmaps'], resourceNames: [ref.name], verbs: ['get', 'patch'] },
      ],
    },
    roleBinding: {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: owned,
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
      subjects: [{ kind: 'ServiceAccount', name, namespace }],
    },
    configMap: {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: ref.name, namespace, labels: { [RISK_MODEL_LABEL]: 'true' } },
    },
    cronJob: {
      apiVersion: 'batch/v1',
      kind: 'CronJob',
      metadata: owned,
      spec: {
        schedule: training.schedule,
        suspend: training.suspend ?? false,
        // One training at a time; a run missed by more than an hour is skipped, not caught up.
        concurrencyPolicy: 'Forbid',
        startingDeadlineSeconds: 3600,
        successfulJobsHistoryLimit: 3,
        failedJobsHistoryLimit: 3,
        jobTemplate: {
          metadata: { labels },
          spec: {
            backoffLimit: 2,
            activeDeadlineSeconds: 3600,
            ttlSecondsAfterFinished: 7 * 24 * 3600,
            // Too few events (3) or a model no better than the one in force (4) is an answer,
            // not a failure to retry.
            podFailurePolicy: {
              rules: [
                {
                  action: 'FailJob',
                  onExitCodes: { containerName: 'trainer', operator: 'In', values: [3, 4] },
                },
              ],
            },
            template: {
              metadata: { labels },
              spec: {
                serviceAccountName: name,
                restartPolicy: 'Never',
                securityContext: {
                  runAsNonRoot: true,
                  runAsUser: 65532,
                  runAsGroup: 65532,
                  seccompProfile: { type: 'RuntimeDefault' },
                },
                containers: [
                  {
                    name: 'trainer',
                    image: settings.image,
                    args,
                    env: [
                      {
                        name: 'NOX_DATABASE_URL',
                        valueFrom: {
                          secretKeyRef: {
                            name: training.auditDatabase.name,
                            key: training.auditDatabase.key ?? 'ro-uri',
                          },
                        },
                      },
                    ],
                    terminationMessagePath: '/dev/termination-log',
                    terminationMessagePolicy: 'File',
                    securityContext: {
                      allowPrivilegeEscalation: false,
                      readOnlyRootFilesystem: true,
                      capabilities: { drop: ['ALL'] },
                    },
                    resources: { requests: { cpu: '250m', memory: '512Mi' }, limits: { memory: '2Gi' } },
                  },
                ],
              },
            },
          },
        },
      },
    },
  };
}
