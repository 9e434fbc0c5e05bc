/**
 * Process settings of the operator, read once from the environment at start, validated,
 * then frozen. Each setting has exactly one definition here: its variable, default and
 * meaning (`nox-operator --help` prints this list).
 */

import {
  bool,
  type Definition,
  describeDefinitions,
  failIfProblems,
  intIn,
  logLevel,
  nonEmpty,
  port,
  readSettings,
  type SettingsOf,
  text,
} from '../common/settings.js';

const dnsName = (raw: string): string => {
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(raw) || raw.length > 253)
    throw new Error(`must be a lowercase DNS name, got "${raw}"`);
  return raw;
};

export const definitions = {
  httpHost: {
    env: 'NOX_HTTP_HOST',
    default: '127.0.0.1',
    doc: 'Address of the /metrics, /healthz, /readyz server (0.0.0.0 in a pod, so the kubelet can probe it).',
    parse: nonEmpty,
  },
  httpPort: {
    env: 'NOX_HTTP_PORT',
    default: 9090,
    doc: 'Port of the /metrics, /healthz, /readyz server (0: any free port).',
    parse: port,
  },
  kubeconfig: {
    env: 'NOX_KUBECONFIG',
    default: '',
    doc: 'kubeconfig file; empty uses the in-cluster service account (or $KUBECONFIG).',
    parse: text,
  },
  watchNamespaces: {
    env: 'NOX_WATCH_NAMESPACES',
    default: '',
    doc: 'Comma-separated namespaces whose resources the operator serves; empty means all namespaces (needs a ClusterRole).',
    parse: text,
  },
  anyHostNamespaces: {
    env: 'NOX_ANY_HOST_NAMESPACES',
    default: '*',
    doc: 'The sidecars\' setting of the same name, for status: an AccessPolicy without hosts from a namespace not listed here is Ready=False HostsRequired. Comma-separated; "*": every namespace.',
    parse: text,
  },
  operatorNamespace: {
    env: 'NOX_OPERATOR_NAMESPACE',
    default: '',
    doc: 'Namespace of the leader-election Lease; empty: $POD_NAMESPACE, else the service account’s namespace, else "default".',
    parse: text,
  },
  leaderElection: {
    env: 'NOX_LEADER_ELECTION',
    default: true,
    doc: 'Elect one leader among the replicas through a coordination.k8s.io Lease; only the leader reconciles. false: this process always reconciles (run exactly one).',
    parse: bool,
  },
  leaseName: {
    env: 'NOX_LEASE_NAME',
    default: 'nox-operator',
    doc: 'Name of the leader-election Lease.',
    parse: dnsName,
  },
  identity: {
    env: 'NOX_OPERATOR_IDENTITY',
    default: '',
    doc: 'This replica’s name in the Lease; empty: $POD_NAME (or the host name) plus a random suffix.',
    parse: text,
  },
  trainerImage: {
    env: 'NOX_TRAINER_IMAGE',
    default: 'ghcr.io/nox-dev/nox-trainer:latest',
    doc: 'Image of the risk-model trainer (images/trainer), which the training CronJobs of RiskModels run. The chart sets the release’s.',
    parse: nonEmpty,
  },
  leaseDurationMs: {
    env: 'NOX_LEASE_DURATION_MS',
    default: 15_000,
    doc: 'How long a Lease that is not renewed stays the holder’s; a successor takes over at most this long (plus one retry period) after a leader dies. Written to the Lease rounded up to seconds.',
    parse: intIn(1000, 600_000),
  },
  renewDeadlineMs: {
    env: 'NOX_LEASE_RENEW_DEADLINE_MS',
    default: 10_000,
    doc: 'A leader that could not renew its Lease for this long stops reconciling. Must be below NOX_LEASE_DURATION_MS.',
    parse: intIn(200, 600_000),
  },
  retryPeriodMs: {
    env: 'NOX_LEASE_RETRY_PERIOD_MS',
    default: 2_000,
    doc: 'Interval of Lease renewals (leader) and acquisition attempts (the others).',
    parse: intIn(100, 60_000),
  },
  resyncMs: {
    env: 'NOX_RESYNC_MS',
    default: 600_000,
    doc: 'Every object is reconciled at least this often, even if nothing it depends on changed.',
    parse: intIn(1000, 86_400_000),
  },
  reconcileConcurrency: {
    env: 'NOX_RECONCILE_CONCURRENCY',
    default: 2,
    doc: 'Objects of one kind reconciled at the same time (never the same object twice at once).',
    parse: intIn(1, 64),
  },
  retryBaseMs: {
    env: 'NOX_RETRY_BASE_MS',
    default: 200,
    doc: 'First retry delay of a failed reconcile; it doubles per consecutive failure of the same object.',
    parse: intIn(1, 600_000),
  },
  retryMaxMs: {
    env: 'NOX_RETRY_MAX_MS',
    default: 30_000,
    doc: 'Cap of the retry delay of a failing object.',
    parse: intIn(1, 3_600_000),
  },
  requestTimeoutMs: {
    env: 'NOX_KUBE_REQUEST_TIMEOUT_MS',
    default: 30_000,
    doc: 'Deadline of one request to the Kubernetes API (watches excepted).',
    parse: intIn(100, 600_000),
  },
  shutdownTimeoutMs: {
    env: 'NOX_SHUTDOWN_TIMEOUT_MS',
    default: 10_000,
    doc: 'On SIGTERM, how long reconciles in flight may take before the Lease is released anyway.',
    parse: intIn(0, 600_000),
  },
  logLevel,
} as const satisfies Record<string, Definition<unknown>>;

export type Settings = SettingsOf<typeof definitions>;

/** Reads every setting; a bad value fails with the variable name and the rule it broke. */
export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  const { values: s, problems } = readSettings(definitions, env);
  if (problems.length === 0 && s.leaderElection) {
    if (!(s.leaseDurationMs > s.renewDeadlineMs))
      problems.push('NOX_LEASE_RENEW_DEADLINE_MS: must be below NOX_LEASE_DURATION_MS');
    if (!(s.renewDeadlineMs > s.retryPeriodMs * 1.2))
      problems.push('NOX_LEASE_RETRY_PERIOD_MS: must be below NOX_LEASE_RENEW_DEADLINE_MS / 1.2');
  }
  if (problems.length === 0 && s.retryBaseMs > s.retryMaxMs)
    problems.push('NOX_RETRY_BASE_MS: must not exceed NOX_RETRY_MAX_MS');
  failIfProblems(problems);
  return Object.freeze(s);
}

export function describeSettings(): string {
  return describeDefinitions(definitions);
}
