/**
 * The closed list of condition reasons the policy status reconcilers write. Each names
 * what is wrong (or that nothing is), the condition it appears on, and what a user does
 * about it. Adding a reason means adding a row here (reasons.test.ts checks every row).
 */

export interface ReasonSpec {
  /** The condition type(s) that carry it. */
  readonly on: readonly ('Accepted' | 'Ready')[];
  /** The condition status it comes with. */
  readonly status: 'True' | 'False';
  /** One sentence: what it means and what to do. */
  readonly doc: string;
}

export const policyReasons = {
  Valid: {
    on: ['Accepted'],
    status: 'True',
    doc: 'The spec passes every rule of the kind (schema, CEL rules, and the checks beyond them).',
  },
  InvalidSpec: {
    on: ['Accepted', 'Ready'],
    status: 'False',
    doc: 'The spec breaks a rule of the kind; the message lists each field and rule. Fix the spec; the sidecars do not use this resource.',
  },
  Ready: {
    on: ['Ready'],
    status: 'True',
    doc: 'Everything the resource refers to exists and is usable; the sidecars apply it.',
  },
  ProviderNotFound: {
    on: ['Ready'],
    status: 'False',
    doc: 'An AccessPolicy names an OAuth2Provider (spec.providers or spec.login.providers) that does not exist in its namespace. Create it or fix the name.',
  },
  ProviderNotReady: {
    on: ['Ready'],
    status: 'False',
    doc: 'An OAuth2Provider the AccessPolicy names exists but is not usable itself (invalid, or its Secret is missing); the message quotes the provider’s problem.',
  },
  ProviderLoginDisabled: {
    on: ['Ready'],
    status: 'False',
    doc: 'spec.login.providers names an OAuth2Provider without login.enabled, so browsers cannot be sent to it. Enable login on the provider or remove it from the list.',
  },
  SecretNotFound: {
    on: ['Ready'],
    status: 'False',
    doc: 'A Secret the resource refers to (clientSecretRef, login.encryptionKeySecretRef) does not exist in its namespace. Create it.',
  },
  SecretKeyNotFound: {
    on: ['Ready'],
    status: 'False',
    doc: 'The referenced Secret exists but has no such key, or its value is empty. Add the key to the Secret or fix the key name in the reference.',
  },
  InvalidEncryptionKey: {
    on: ['Ready'],
    status: 'False',
    doc: 'The session key Secret value is not a 32-byte AES-256 key (raw, hex or base64; several separated by whitespace or commas). Write a key made with e.g. `openssl rand -base64 32`.',
  },
  ConfigMapNotFound: {
    on: ['Ready'],
    status: 'False',
    doc: 'The ConfigMap holding the RiskModel’s model (spec.model.configMapRef) does not exist in its namespace. Create it (kubectl create configmap --from-file puts a binary file in binaryData).',
  },
  ConfigMapKeyNotFound: {
    on: ['Ready'],
    status: 'False',
    doc: 'The model ConfigMap has no such binaryData key (a key in data does not count: a model is binary). Add the model under that key or fix the key name.',
  },
  ModelDigestMismatch: {
    on: ['Ready'],
    status: 'False',
    doc: 'The model bytes in the ConfigMap do not have the sha256 in spec.model.sha256, so sidecars refuse to load them. Put the intended model in the ConfigMap, or update spec.model.sha256 to the new model’s digest.',
  },
} as const satisfies Record<string, ReasonSpec>;

export type PolicyReason = keyof typeof policyReasons;

export const allPolicyReasons = Object.keys(policyReasons) as PolicyReason[];
