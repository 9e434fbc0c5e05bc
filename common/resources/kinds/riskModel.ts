import { ageColumn, type KindDefinition, readyColumn, reasonColumn } from '../kind.js';
import {
  bool,
  conditions,
  duration,
  enforcementMode,
  enumOf,
  failureMode,
  int,
  num,
  obj,
  patterns,
  routeMatch,
  secretKeyRef,
  set,
  str,
} from '../schema.js';

/** The documented feature vector, in the order the model's input tensor expects them. */
export const riskFeatures = [
  'subjectRate1m',
  'subjectRate1h',
  'distinctSourceIPs1h',
  'recentFailures15m',
  'hourOfDay',
  'dayOfWeek',
  'newUserAgent',
  'pathNovelty',
  'writeMethod',
  'anonymous',
] as const;
export type RiskFeature = (typeof riskFeatures)[number];

/** The label of the ConfigMaps that hold models: the sidecars read only those. */
export const RISK_MODEL_LABEL = 'nox.dev/risk-model';
/** The annotation of a model ConfigMap naming its model's sha256 (hex), written by its publisher. */
export const RISK_MODEL_DIGEST_ANNOTATION = 'nox.dev/sha256';

/** The digest a model ConfigMap's publisher wrote beside the bytes (lower case), if any. */
export function publishedDigest(meta: { annotations?: Record<string, string> }): string | undefined {
  return meta.annotations?.[RISK_MODEL_DIGEST_ANNOTATION]?.toLowerCase();
}

/**
 * The digest a RiskModel's model must have, as the sidecars and the operator both apply it:
 * the spec's sha256 pins the model; without it, a ConfigMap's published digest; else none.
 */
export function wantedDigest(
  specSha256: string | undefined,
  published: string | undefined,
): string | undefined {
  return specSha256?.toLowerCase() ?? published;
}

const score = (description: string) => num(description, { minimum: 0, maximum: 1 });

export const riskModel: KindDefinition = {
  kind: 'RiskModel',
  plural: 'riskmodels',
  singular: 'riskmodel',
  shortNames: ['rm'],
  role: 'policy',
  description: 'An ONNX model that scores each request’s risk, and what the Nox sidecar does with the score.',
  spec: obj(
    'The model, its inputs, and the thresholds that decide.',
    {
      match: routeMatch,
      mode: enforcementMode,
      failureMode: failureMode('the model'),
      model: obj(
        'Where the ONNX model is, and its digest.',
        {
          configMapRef: obj(
            `A binaryData key of a ConfigMap in this namespace, labelled ${RISK_MODEL_LABEL}=true (the sidecars watch only those). Its digest is spec.model.sha256 when set, else the ConfigMap's ${RISK_MODEL_DIGEST_ANNOTATION} annotation, which training writes with each model it publishes.`,
            {
              name: str('ConfigMap name.', { pattern: patterns.dnsLabel }),
              key: str('Key.', { maxLength: 253 }),
            },
            { required: ['name', 'key'] },
          ),
          path: str('A file in the sidecar’s filesystem (e.g. a mounted volume).', {
            pattern: '^/',
            maxLength: 1024,
          }),
          sha256: str(
            `sha256 of the model, hex; a model that does not match is not loaded. Required with path; with configMapRef it pins the model, and without it the ConfigMap's ${RISK_MODEL_DIGEST_ANNOTATION} annotation names the digest.`,
            { pattern: patterns.sha256, maxLength: 64 },
          ),
        },
        {
          rules: [
            {
              rule: 'has(self.configMapRef) != has(self.path)',
              message: 'exactly one of configMapRef or path must be set',
            },
            {
              rule: 'has(self.configMapRef) || has(self.sha256)',
              message: 'sha256 is required with path',
            },
          ],
        },
      ),
      features: set(
        'Input features, in the order of the model’s input tensor.',
        enumOf('Feature.', riskFeatures),
        { minItems: 1, maxItems: 32 },
      ),
      thresholds: obj(
        'Scores (0..1) at which the decision changes. Below challenge: allow.',
        {
          challenge: score('At or above: step-up challenge (browser) or deny (API).'),
          deny: score('At or above: deny.'),
          block: score('At or above: deny and put the subject on the cluster-wide block list.'),
        },
        {
          required: ['challenge', 'deny', 'block'],
          rules: [
            {
              rule: 'self.challenge <= self.deny && self.deny <= self.block',
              message: 'thresholds must satisfy challenge <= deny <= block',
            },
          ],
        },
      ),
      blockDuration: duration('How long a blocked subject stays blocked.', { default: '15m' }),
      stepUp: obj(
        'What a challenge asks for (RFC 9470): a fresh authentication, and the authentication context if set. A request whose token shows it passes the challenge.',
        {
          maxAge: duration('The authentication must be at most this old (the token’s auth_time).', {
            default: '5m',
          }),
          acrValues: set(
            'Authentication context class references the provider must have met (the token’s acr is one of them); none: any.',
            // Sent space-separated in a quoted header parameter: no space, quote or backslash.
            str('An acr value: printable ASCII without space, " or \\.', {
              maxLength: 256,
              pattern: '^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$',
            }),
            { maxItems: 16 },
          ),
        },
      ),
      training: obj(
        'Train this model from the audit log on a schedule: the operator runs the trainer as a CronJob in this namespace; each run fits on the lookback window, evaluates on its last `holdout`, and publishes to model.configMapRef only when the new model is no worse than the one in force.',
        {
          schedule: str('When to train, in cron format (CronJob.spec.schedule), e.g. "0 3 * * *".', {
            minLength: 9,
            maxLength: 100,
            pattern: '^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\\S+\\s+){4}\\S+)$',
          }),
          lookback: duration('Window of audit events to learn from.', { default: '7d' }),
          holdout: duration('The last part of the window, kept out of training to evaluate on.', {
            default: '1d',
          }),
          contamination: num(
            'Share of the training events taken as anomalous (IsolationForest contamination).',
            {
              minimum: 0.00001,
              maximum: 0.5,
              default: 0.001,
            },
          ),
          minEvents: int('Fewer events in the training window: no model this run.', {
            minimum: 100,
            default: 10000,
          }),
          auditDatabase: secretKeyRef(
            'A Secret key holding the connection string of the audit log, a replica preferably (a PostgresCluster’s <name>-app Secret, key ro-uri).',
            'ro-uri',
          ),
          suspend: bool('No new runs while true (CronJob.spec.suspend).', { default: false }),
        },
        { required: ['schedule', 'auditDatabase'] },
      ),
      batch: obj('Concurrent checks are scored in one inference.', {
        maxSize: int('Largest batch.', { minimum: 1, maximum: 256, default: 32 }),
        maxDelay: duration('Longest a check waits for its batch to fill.', { default: '1ms' }),
      }),
    },
    {
      required: ['model', 'features', 'thresholds'],
      rules: [
        {
          rule: '!has(self.training) || has(self.model.configMapRef)',
          message: 'training publishes to model.configMapRef: set it (not model.path)',
        },
        {
          rule: '!has(self.training) || !has(self.model.sha256)',
          message:
            'with training, leave model.sha256 unset: each published model carries its digest (nox.dev/sha256)',
        },
      ],
    },
  ),
  status: obj('Observed state.', {
    observedGeneration: int('Generation the status describes.', { minimum: 0 }),
    loadedSha256: str('Digest of the model the sidecars run.', { maxLength: 64 }),
    conditions,
  }),
  printerColumns: [
    { name: 'Mode', type: 'string', jsonPath: '.spec.mode' },
    { name: 'Deny-At', type: 'number', jsonPath: '.spec.thresholds.deny' },
    { name: 'Block-At', type: 'number', jsonPath: '.spec.thresholds.block' },
    readyColumn,
    reasonColumn,
    ageColumn,
  ],
};
