/**
 * Process settings of the sidecar, read once from the environment at start, validated,
 * then frozen. Each setting has exactly one definition here: its variable, default and
 * meaning (`nox-authz --help` and the README table are printed from this list).
 */

import {
  type Definition,
  describeDefinitions,
  failIfProblems,
  nonEmpty as host,
  logLevel,
  oneOf,
  port,
  positiveInt,
  readSettings,
  type SettingsOf,
  text,
} from '../../common/settings.js';

/** The bound of one dependency identity calls (identity/fanout.ts applies it). */
export interface GuardLimits {
  /** Remote checks running at once. */
  readonly maxInFlight: number;
  /** Remote checks started per second (token bucket refill); undefined: no rate bound. */
  readonly ratePerSec?: number;
  /** Token bucket size: the burst above the rate. */
  readonly burst?: number;
}

/**
 * "inFlight[/perSecond[/burst]]" → a dependency's bound (fanout.ts): remote identity checks at
 * once, and optionally started per second with a burst (default: the rate).
 */
function guardLimits(raw: string): GuardLimits {
  const m = /^\s*(\d+)\s*(?:\/\s*(\d+)\s*(?:\/\s*(\d+)\s*)?)?$/.exec(raw);
  const [inFlight, rate, burst] = (m?.slice(1) ?? []).map((n) => (n === undefined ? undefined : Number(n)));
  if (
    !m ||
    !inFlight ||
    inFlight > 100_000 ||
    rate === 0 ||
    (rate ?? 0) > 1_000_000 ||
    burst === 0 ||
    (burst ?? 0) > 1_000_000
  )
    throw new Error(
      `must be "inFlight[/perSecond[/burst]]", whole numbers from 1 (at most 100000 in flight, 1000000 per second or burst), got "${raw}"`,
    );
  return { maxInFlight: inFlight, ...(rate ? { ratePerSec: rate } : {}), ...(burst ? { burst } : {}) };
}

const fanoutDoc = (what: string) =>
  `Bound on ${what}: "inFlight[/perSecond[/burst]]". A remote identity check over it is not made and the request is denied IDENTITY_DEPENDENCY_BUSY (503, Retry-After: 1); cache hits never count.`;

export interface RedisNode {
  readonly host: string;
  readonly port: number;
}

/** "a:6379, b:6379" → the nodes; a part that is not host:port is an error at start. */
function redisNodes(raw: string): readonly RedisNode[] {
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => {
      const i = s.lastIndexOf(':');
      const port = Number(s.slice(i + 1));
      if (i <= 0 || !Number.isInteger(port)) throw new Error(`"${s}" is not host:port`);
      return { host: s.slice(0, i), port };
    });
}

/** Plain text for a page heading: no control characters, at most 80 characters. */
function pageTitle(raw: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(raw) || raw.trim() !== raw || raw.length > 80)
    throw new Error(
      'must be plain text of at most 80 characters, without control characters or surrounding spaces',
    );
  return raw;
}

/** An https URL, a path on the same host or a data:image/ URL: something a strict CSP can name. */
function logoUrl(raw: string): string {
  if (/^data:image\/(png|gif|jpeg|webp|svg\+xml)[;,][A-Za-z0-9+/=;,%._-]*$/.test(raw)) return raw;
  if (localPath(raw) && !/["'<>\s]/.test(raw)) return raw;
  let u: URL | undefined;
  try {
    u = new URL(raw);
  } catch {
    u = undefined;
  }
  if (u?.protocol !== 'https:' || u.username || u.password || /["'<>\s]/.test(raw))
    throw new Error(`must be an https URL, a path starting with / or a data:image/ URL, got "${raw}"`);
  return raw;
}

/**
 * A path (and query) on this host, as login/cookies.ts localTarget reads return URLs: "//host"
 * and "/\\host" are other sites to a browser, and control characters are refused.
 */
function localPath(raw: string): boolean {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  return /^\/(?![/\\])/.test(raw) && !/[\u0000-\u001f\u007f]/.test(raw) && raw.length <= 2048;
}

function defaultPath(raw: string): string {
  if (!localPath(raw)) throw new Error(`must be a path on this host starting with a single /, got "${raw}"`);
  return raw;
}

export const definitions = {
  grpcHost: {
    env: 'NOX_GRPC_HOST',
    default: '127.0.0.1',
    doc: 'Address the ext_authz gRPC server binds.',
    parse: host,
  },
  grpcPort: {
    env: 'NOX_GRPC_PORT',
    default: 9001,
    doc: 'Port of the ext_authz gRPC server (0: any free port).',
    parse: port,
  },
  httpHost: {
    env: 'NOX_HTTP_HOST',
    default: '127.0.0.1',
    doc: 'Address of the /metrics, /healthz, /readyz server.',
    parse: host,
  },
  httpPort: {
    env: 'NOX_HTTP_PORT',
    default: 9002,
    doc: 'Port of the /metrics, /healthz, /readyz server (0: any free port).',
    parse: port,
  },
  configSource: {
    env: 'NOX_CONFIG_SOURCE',
    default: 'files',
    doc: 'Where nox.dev policies come from: files (NOX_POLICY_PATH) or kubernetes (list + watch through the API server).',
    parse: oneOf('files', 'kubernetes'),
  },
  policyPath: {
    env: 'NOX_POLICY_PATH',
    default: '',
    doc: 'files source: a manifest file or a directory of them (read recursively, watched for changes). Empty: the sidecar never becomes ready and denies every check (NOT_READY).',
    parse: text,
  },
  watchNamespaces: {
    env: 'NOX_WATCH_NAMESPACES',
    default: '',
    doc: 'kubernetes source: comma-separated namespaces whose policies apply; empty means all namespaces (needs cluster-wide list/watch RBAC).',
    parse: text,
  },
  anyHostNamespaces: {
    env: 'NOX_ANY_HOST_NAMESPACES',
    default: '*',
    doc: 'Comma-separated namespaces whose AccessPolicies may list no hosts and so cover every host (a platform team\'s); "*": every namespace. A policy without hosts from any other namespace applies nowhere (reported). The Helm chart sets its release namespace.',
    parse: text,
  },
  kubeconfig: {
    env: 'NOX_KUBECONFIG',
    default: '',
    doc: 'kubernetes source: kubeconfig file; empty uses the in-cluster service account (or $KUBECONFIG).',
    parse: text,
  },
  sessionStore: {
    env: 'NOX_SESSION_STORE',
    default: 'memory',
    doc: 'Browser-login sessions: memory (in-process; one sidecar, lost on restart), redis or redis-cluster (shared by every sidecar; uses NOX_REDIS_NODES and NOX_REDIS_PASSWORD_FILE).',
    parse: oneOf('memory', 'redis', 'redis-cluster'),
  },
  sessionTimeoutMs: {
    env: 'NOX_SESSION_TIMEOUT_MS',
    default: 100,
    doc: 'A session read or write not answered within this fails: the request is denied (503), never treated as anonymous.',
    parse: positiveInt(10_000),
  },
  secretsDir: {
    env: 'NOX_SECRETS_DIR',
    default: '',
    doc: 'files source: Secrets mounted as files, laid out <dir>/<namespace>/<secret>/<key> (client secrets, session keys, API keys). In kubernetes mode Secrets are read through the API.',
    parse: text,
  },
  quotaStore: {
    env: 'NOX_QUOTA_STORE',
    default: 'memory',
    doc: 'Quota counters: memory (in-process, for standalone mode and the demo; counts per sidecar), redis (one Redis) or redis-cluster (shared by every sidecar).',
    parse: oneOf('memory', 'redis', 'redis-cluster'),
  },
  quotaMemoryMaxEntries: {
    env: 'NOX_QUOTA_MEMORY_MAX_ENTRIES',
    default: 100_000,
    doc: 'memory quota store: at most this many quota states (subject × limit, about 200 bytes each) are kept; past it the least recently used is dropped and its subject starts afresh (nox_quota_memory_evictions_total).',
    parse: positiveInt(10_000_000),
  },
  fanoutSessions: {
    env: 'NOX_FANOUT_SESSIONS',
    default: { maxInFlight: 256 } as GuardLimits,
    doc: fanoutDoc('session store lookups (one per request at most)'),
    parse: guardLimits,
  },
  fanoutTokenReview: {
    env: 'NOX_FANOUT_TOKENREVIEW',
    default: { maxInFlight: 16, ratePerSec: 50, burst: 100 } as GuardLimits,
    doc: fanoutDoc('TokenReviews sent to the API server (ServiceAccount tokens that pass the local checks)'),
    parse: guardLimits,
  },
  fanoutIntrospection: {
    env: 'NOX_FANOUT_INTROSPECTION',
    default: { maxInFlight: 32, ratePerSec: 100, burst: 200 } as GuardLimits,
    doc: fanoutDoc('token introspection calls, per OAuth2Provider'),
    parse: guardLimits,
  },
  fanoutGithub: {
    env: 'NOX_FANOUT_GITHUB',
    default: { maxInFlight: 16, ratePerSec: 20, burst: 50 } as GuardLimits,
    doc: fanoutDoc(
      'GitHub API calls, per API origin (GitHub blocks an address that sends many bad credentials)',
    ),
    parse: guardLimits,
  },
  redisNodes: {
    env: 'NOX_REDIS_NODES',
    default: [] as readonly RedisNode[],
    doc: 'redis stores: comma-separated host:port; for redis-cluster any subset of the nodes (the rest is discovered).',
    parse: redisNodes,
  },
  redisPasswordFile: {
    env: 'NOX_REDIS_PASSWORD_FILE',
    default: '',
    doc: 'File holding the Redis password (mount the RedisCluster’s Secret); empty: no AUTH.',
    parse: text,
  },
  redisTimeoutMs: {
    env: 'NOX_REDIS_TIMEOUT_MS',
    default: 50,
    doc: 'A quota round trip not answered within this fails and the QuotaPolicy’s failureMode decides. Keep it well below NOX_CHECK_DEADLINE_MS.',
    parse: positiveInt(10_000),
  },
  redisWaitReplicas: {
    env: 'NOX_REDIS_WAIT_REPLICAS',
    default: 1,
    doc: 'Replicas that must hold a charge before a request is admitted (WAIT), so a master failover never loses admitted usage; 0 for Redis without replicas.',
    parse: (raw: string) => {
      const n = Number(raw);
      if (!Number.isInteger(n) || n < 0 || n > 5) throw new Error(`must be an integer 0-5, got "${raw}"`);
      return n;
    },
  },
  redisWaitTimeoutMs: {
    env: 'NOX_REDIS_WAIT_TIMEOUT_MS',
    default: 20,
    doc: 'How long a charge may wait for its replicas (WAIT) before the check fails and the QuotaPolicy’s failureMode decides; at most half of NOX_REDIS_TIMEOUT_MS. Raise it where replicas are slow to acknowledge (busy or distant nodes).',
    parse: positiveInt(10_000),
  },
  databaseUrl: {
    env: 'NOX_DATABASE_URL',
    default: '',
    doc: 'PostgreSQL connection string (from the PostgresCluster’s Secret) for quota overrides and usage rollups; empty: neither (standalone mode).',
    parse: text,
  },
  audit: {
    env: 'NOX_AUDIT',
    default: 'BestEffort',
    doc: 'Audit events of decisions (with NOX_DATABASE_URL): BestEffort (a check is answered at once; its event reaches the local spool within NOX_AUDIT_FLUSH_MS, so only a SIGKILL of the sidecar can lose that much), Durable (a check is answered only once its event is synced to the spool), or Off.',
    parse: oneOf('BestEffort', 'Durable', 'Off'),
  },
  auditSpoolDir: {
    env: 'NOX_AUDIT_SPOOL_DIR',
    default: '/var/lib/nox/audit',
    doc: 'Directory of the audit spool: every event goes through it on its way to PostgreSQL, and waits there while PostgreSQL is unreachable. One per sidecar process (an emptyDir, or a volume that outlives the pod).',
    parse: host,
  },
  auditSpoolMaxBytes: {
    env: 'NOX_AUDIT_SPOOL_MAX_BYTES',
    default: 256 << 20,
    doc: 'Bound of the audit spool in bytes (an event is about 300 bytes); what happens when it is full is NOX_AUDIT_SPOOL_FULL.',
    parse: positiveInt(2 ** 40),
  },
  auditSpoolFull: {
    env: 'NOX_AUDIT_SPOOL_FULL',
    default: 'DropOldest',
    doc: 'A full audit spool: DropOldest (its oldest events are dropped, counted in nox_audit_events_dropped_total and logged) or Deny (checks are denied AUDIT_UNAVAILABLE until there is room).',
    parse: oneOf('DropOldest', 'Deny'),
  },
  auditFlushMs: {
    env: 'NOX_AUDIT_FLUSH_MS',
    default: 100,
    doc: 'BestEffort audit: buffered events are written to the spool this often (the most a SIGKILL can lose).',
    parse: positiveInt(10_000),
  },
  podName: {
    env: 'POD_NAME',
    default: '',
    doc: 'This sidecar’s name in audit events (the chart sets the pod name); empty: the host name.',
    parse: text,
  },
  loginTitle: {
    env: 'NOX_LOGIN_TITLE',
    default: '',
    doc: 'Browser pages (provider chooser, error pages): the site\'s name, shown at the top of every page; the chooser says "Sign in to <title>". Plain text, at most 80 characters. Empty: "Sign in" and no name.',
    parse: pageTitle,
  },
  loginLogoUrl: {
    env: 'NOX_LOGIN_LOGO_URL',
    default: '',
    doc: "Browser pages: a logo shown above the title, as an https URL, a path on the same host, or a data:image/ URL; the pages' Content-Security-Policy allows images from there only. Empty: no logo.",
    parse: logoUrl,
  },
  loginDefaultPath: {
    env: 'NOX_LOGIN_DEFAULT_PATH',
    default: '/',
    doc: 'Browser login: where a browser lands when the page to return to is missing or refused (not a path on this host), and after a logout without postLogoutRedirect; also the "start page" link of the error pages. A local path; make sure an AccessPolicy covers it.',
    parse: defaultPath,
  },
  jwksCooldownMs: {
    env: 'NOX_JWKS_COOLDOWN_MS',
    default: 30_000,
    doc: 'After a JWKS fetch, a token with an unknown key id causes no new fetch for this long (per issuer): a flood of forged kids cannot hammer the provider.',
    parse: positiveInt(3_600_000),
  },
  jwksMaxAgeMs: {
    env: 'NOX_JWKS_MAX_AGE_MS',
    default: 600_000,
    doc: 'How long fetched signing keys are used without re-fetching; during a provider outage they keep validating until then.',
    parse: positiveInt(86_400_000),
  },
  loginDeadlineMs: {
    env: 'NOX_LOGIN_DEADLINE_MS',
    default: 5000,
    doc: 'Deadline of a check on a login callback path (on a host the login is bound to): the code exchange and the ID token check are round trips to the provider inside it, so a slow provider must not fail a login at NOX_CHECK_DEADLINE_MS. Envoy must give those paths a longer ext_authz timeout too (a per-route check_settings.grpc_service, see examples/gateways/envoy.yaml).',
    parse: positiveInt(60_000),
  },
  checkDeadlineMs: {
    env: 'NOX_CHECK_DEADLINE_MS',
    default: 150,
    doc: 'Every check is answered within this many milliseconds (deny DEADLINE_EXCEEDED otherwise); keep it below the ext_authz timeout configured in Envoy.',
    parse: positiveInt(60_000),
  },
  drainTimeoutMs: {
    env: 'NOX_DRAIN_TIMEOUT_MS',
    default: 10_000,
    doc: 'On SIGTERM, how long in-flight checks may take to finish before the server closes.',
    parse: positiveInt(600_000),
  },
  logLevel,
} as const satisfies Record<string, Definition<unknown>>;

export type Settings = SettingsOf<typeof definitions>;

/** Reads every setting; a bad value fails with the variable name and the rule it broke. */
export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  const { values, problems } = readSettings(definitions, env);
  failIfProblems(problems);
  return Object.freeze(values);
}

export function describeSettings(): string {
  return describeDefinitions(definitions);
}
