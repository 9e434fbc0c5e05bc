/**
 * The closed list of condition reasons the operator writes, for every kind it serves (the
 * policy kinds, RedisCluster, PostgresCluster). Each names what is wrong (or that nothing
 * is), the conditions it appears on with their status, and what a user does about it.
 * A reason is typed `ConditionReason`, so one that is not in this list does not compile;
 * reasons.test.ts checks that every row is documented and every reason written is a row.
 */

export type ConditionType = 'Accepted' | 'Ready' | 'Degraded' | 'SchemaMigrated';

export interface ReasonSpec {
  /** The conditions that carry it, each with the status it comes with. */
  readonly on: Readonly<Partial<Record<ConditionType, 'True' | 'False'>>>;
  /** One sentence: what it means and what to do. */
  readonly doc: string;
}

/** A cluster problem: Ready=False, and Degraded=True once the cluster has been formed. */
const clusterProblem = { Ready: 'False', Degraded: 'True' } as const;
const notReady = { Ready: 'False' } as const;

export const conditionReasons = {
  // Every kind.
  Valid: {
    on: { Accepted: 'True' },
    doc: 'The spec passes every rule of the kind (schema, CEL rules, and the checks beyond them).',
  },
  InvalidSpec: {
    on: { Accepted: 'False', Ready: 'False', Degraded: 'False' },
    doc: 'The spec breaks a rule of the kind; the message lists each field and rule. Fix the spec; until then it is not in force.',
  },
  SecretNotFound: {
    on: clusterProblem,
    doc: 'A Secret the resource refers to (clientSecretRef, login.encryptionKeySecretRef, a PostgresCluster’s superuserSecretRef or appSecretRef) does not exist in its namespace, or lacks the key. Create it.',
  },

  // Policy kinds (QuotaPolicy, OAuth2Provider, AccessPolicy, RiskModel).
  Ready: {
    on: { Ready: 'True' },
    doc: 'Everything the resource refers to exists and is usable; the sidecars apply it.',
  },
  ProviderNotFound: {
    on: notReady,
    doc: 'An AccessPolicy names an OAuth2Provider (spec.providers or spec.login.providers) that does not exist in its namespace. Create it or fix the name.',
  },
  ProviderNotReady: {
    on: notReady,
    doc: 'An OAuth2Provider the AccessPolicy names exists but is not usable itself (invalid, or its Secret is missing); the message quotes the provider’s problem.',
  },
  HostsRequired: {
    on: notReady,
    doc: 'An AccessPolicy lists no hosts, so it would cover every host, and its namespace is not one NOX_ANY_HOST_NAMESPACES allows; the sidecars apply it nowhere. List its hosts.',
  },
  HostTaken: {
    on: notReady,
    doc: 'An AccessPolicy names a host that belongs to another namespace (an AccessPolicy there, or a wildcard over it, named it first); the sidecars do not apply this policy on that host. Remove the host, or have the owner give it up.',
  },
  ProviderLoginDisabled: {
    on: notReady,
    doc: 'spec.login.providers names an OAuth2Provider without login.enabled, so browsers cannot be sent to it. Enable login on the provider or remove it from the list.',
  },
  SecretKeyNotFound: {
    on: notReady,
    doc: 'The referenced Secret exists but has no such key, or its value is empty. Add the key to the Secret or fix the key name in the reference.',
  },
  InvalidEncryptionKey: {
    on: notReady,
    doc: 'The session key Secret value is not a 32-byte AES-256 key (raw, hex or base64; several separated by whitespace or commas). Write a key made with e.g. `openssl rand -base64 32`.',
  },
  ConfigMapNotFound: {
    on: notReady,
    doc: 'The ConfigMap holding the RiskModel’s model (spec.model.configMapRef) does not exist in its namespace. Create it (kubectl create configmap --from-file puts a binary file in binaryData).',
  },
  ConfigMapKeyNotFound: {
    on: notReady,
    doc: 'The model ConfigMap has no such binaryData key (a key in data does not count: a model is binary). Add the model under that key or fix the key name.',
  },
  ConfigMapNotLabelled: {
    on: notReady,
    doc: 'The model ConfigMap lacks the label nox.dev/risk-model=true: the sidecars watch only ConfigMaps so labelled (not every ConfigMap of the namespace). Label it (kubectl label configmap NAME nox.dev/risk-model=true).',
  },
  ModelDigestMismatch: {
    on: notReady,
    doc: 'The model bytes in the ConfigMap do not have the expected sha256 (spec.model.sha256, or else the ConfigMap’s nox.dev/sha256 annotation), so sidecars refuse to load them. Put the intended model in the ConfigMap, or update the digest to the new model’s.',
  },
  ModelChecking: {
    on: notReady,
    doc: 'The operator is loading the model as the sidecars will (onnxruntime, the inputs and outputs of a Nox model); a moment.',
  },
  InvalidModel: {
    on: notReady,
    doc: 'onnxruntime refuses the model bytes (not ONNX, truncated, an operator it lacks). Sidecars do not load it and keep running the model they have (status.loadedSha256). Publish a model the trainer made.',
  },
  ModelWrongInputs: {
    on: notReady,
    doc: 'The model is ONNX but not a Nox risk model for this RiskModel: it must take "features" [N, F] with F the length of spec.features, and give "risk". Sidecars keep the model they have.',
  },
  ModelDigestMissing: {
    on: notReady,
    doc: 'Nothing names the model’s digest: spec.model.sha256 is not set and the ConfigMap has no nox.dev/sha256 annotation (which training writes with each model). Set one of them; sidecars load no model without a digest to check.',
  },

  // Both cluster kinds.
  ApplyFailed: {
    on: clusterProblem,
    doc: 'Server-side apply of a child object (Secret, ConfigMap, Service, StatefulSet, PodDisruptionBudget) failed; the message quotes the API server. Usually RBAC or an admission webhook; retried with backoff.',
  },

  // RedisCluster.
  ClusterHealthy: {
    on: { Ready: 'True', Degraded: 'False' },
    doc: 'Every pod is in the Redis cluster, all 16384 hash slots are served by healthy masters, each with its replicas.',
  },
  Forming: {
    on: { Ready: 'False', Degraded: 'False' },
    doc: 'The Redis cluster is being formed for the first time (pods starting, CLUSTER MEET, slot assignment); wait.',
  },
  PasswordSecretNotFound: {
    on: clusterProblem,
    doc: 'The Secret named by spec.passwordSecretRef does not exist or has no value under the key. Create it, or remove the reference to have one generated.',
  },
  ScaleInBlocked: {
    on: clusterProblem,
    doc: 'The new masters/replicasPerMaster would remove pods that serve hash slots, which the operator does not move off; the StatefulSet keeps its size. Restore the previous spec.',
  },
  NodesNotReady: {
    on: clusterProblem,
    doc: 'Fewer Redis pods are ready than the spec declares; the message names the pods that are not. Look at those pods.',
  },
  SlotsNotCovered: {
    on: clusterProblem,
    doc: 'Some hash slots have no healthy master serving them; keys in them cannot be read or written until a replica takes over or the operator reassigns them.',
  },
  NodesJoining: {
    on: clusterProblem,
    doc: 'Ready pods are not in the Redis cluster yet; the operator is introducing them (CLUSTER MEET).',
  },
  NodesLeaving: {
    on: clusterProblem,
    doc: 'The Redis cluster still knows nodes whose pods are gone; the operator is making it forget them.',
  },
  NodesFailing: {
    on: clusterProblem,
    doc: 'Redis marks some nodes as failing although every pod runs; look at the named nodes’ logs and network.',
  },
  MastersMismatch: {
    on: clusterProblem,
    doc: 'The number of masters owning slots differs from spec.masters; the operator is assigning or moving slots.',
  },
  Rebalancing: {
    on: clusterProblem,
    doc: 'Hash slots (with their keys) are being moved so that every master serves an even share; wait.',
  },
  ReplicasMissing: {
    on: clusterProblem,
    doc: 'Some masters have fewer healthy replicas than spec.replicasPerMaster; the operator attaches replicas as pods become ready.',
  },
  ClusterStateFail: {
    on: clusterProblem,
    doc: 'A node reports cluster_state:fail, so the Redis cluster refuses commands; usually slots are uncovered or a majority of masters is unreachable.',
  },
  NodesUnreachable: {
    on: clusterProblem,
    doc: 'Ready pods whose Redis the operator cannot reach or authenticate to; the message quotes each error.',
  },

  // PostgresCluster.
  Healthy: {
    on: { Ready: 'True', Degraded: 'False' },
    doc: 'The primary accepts writes and every other instance streams from it.',
  },
  NotFormed: {
    on: { Degraded: 'False' },
    doc: 'The cluster has never had a primary, so it cannot be degraded yet (Ready says what it waits for).',
  },
  Bootstrapping: {
    on: notReady,
    doc: 'The first instance is being created and initialised as the primary; wait.',
  },
  ScaleDownBlocked: {
    on: clusterProblem,
    doc: 'Lowering spec.instances would remove the primary; the StatefulSet keeps its size until spec.switchoverTo moves the primary to a lower instance.',
  },
  PrimaryUnavailable: {
    on: clusterProblem,
    doc: 'The primary does not accept writes; unless it recovers within spec.failover.delay, the most advanced replica is promoted.',
  },
  WaitingForOldPrimary: {
    on: clusterProblem,
    doc: 'A new primary is promoted once the former one has stopped answering as a primary (a clean shutdown during a switchover); wait.',
  },
  FencingInProgress: {
    on: clusterProblem,
    doc: 'The lost primary is fenced but still answers as a primary; promotion waits until its instance manager stops it.',
  },
  ReplicasStillAttached: {
    on: clusterProblem,
    doc: 'Too few replicas are confirmed detached from the lost primary (primary_conninfo cleared, WAL receiver stopped) for it to be unable to acknowledge another commit; promotion waits (ADR 005). The message names those still attached.',
  },
  ReplayInProgress: {
    on: clusterProblem,
    doc: 'Enough replicas are detached from the lost primary, but some still replay the WAL on their disk (they have just restarted), so which holds the most is not known yet; promotion waits until their replay stops.',
  },
  TimelineDiverged: {
    on: clusterProblem,
    doc: 'A replica holds WAL of a newer timeline than the primary’s recorded one: some promotion happened that the operator did not make. Nothing is promoted; compare the instances’ timeline history before acting.',
  },
  NotEnoughReplicas: {
    on: clusterProblem,
    doc: 'With synchronous replication, too few replicas can be read to be sure the most advanced one holds every acknowledged commit; failover waits for more of them.',
  },
  NoFailoverCandidate: {
    on: clusterProblem,
    doc: 'No ready, unfenced replica can be promoted; the cluster has no primary until one is back.',
  },
  PromotionPending: {
    on: clusterProblem,
    doc: 'The chosen replica was told to promote and has not finished yet; wait.',
  },
  PromotionFailed: {
    on: clusterProblem,
    doc: 'Promoting the chosen replica failed; the message quotes PostgreSQL’s error. Retried on the next reconcile.',
  },
  SwitchoverWaiting: {
    on: clusterProblem,
    doc: 'spec.switchoverTo names an instance that is not a streaming replica yet (or is fenced); the switchover starts once it streams.',
  },
  SplitBrainPrevented: {
    on: clusterProblem,
    doc: 'Instances other than the designated primary answer as primaries; they are kept out of -rw and fenced until their instance managers stop them.',
  },
  InstancesMissing: {
    on: clusterProblem,
    doc: 'Fewer instance pods exist than spec.instances; the StatefulSet is creating them.',
  },
  InstanceFenced: {
    on: clusterProblem,
    doc: 'A former primary is fenced; it rejoins as a replica (pg_rewind or a fresh clone) once its pod runs again.',
  },
  ReplicaNotStreaming: {
    on: clusterProblem,
    doc: 'A replica is not streaming WAL from the primary (not ready, unreachable or no WAL receiver); the message says which and why.',
  },

  // PostgresCluster with spec.migrations.enabled: condition SchemaMigrated.
  Migrated: {
    on: { SchemaMigrated: 'True' },
    doc: 'Every schema migration of the operator’s version is applied to spec.database (status.schema.version); the message says how many this run applied.',
  },
  MigrationsWaiting: {
    on: { SchemaMigrated: 'False' },
    doc: 'The cluster has no primary that accepts writes yet, so the migrations wait; they run as soon as it has one.',
  },
  MigrationFailed: {
    on: { SchemaMigrated: 'False' },
    doc: 'Applying the migrations failed (connection, permission, or a migration changed after it was applied); the message quotes the error. Nothing of the failed migration is left behind (each runs in its own transaction); retried on the next reconcile.',
  },
} as const satisfies Record<string, ReasonSpec>;

/** A condition reason the operator may write: one of the rows above. */
export type ConditionReason = keyof typeof conditionReasons;

export const allConditionReasons = Object.keys(conditionReasons) as ConditionReason[];

/** Why a resource is not (yet) as its spec says: a condition's reason and its message. */
export interface Problem {
  readonly reason: ConditionReason;
  readonly message: string;
}
