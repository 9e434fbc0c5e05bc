/**
 * Process settings of the admin API (nox-admin), read once from the environment at start,
 * validated, then frozen; `nox-admin --help` prints this list.
 */

import {
  type Definition,
  describeDefinitions,
  failIfProblems,
  logLevel,
  nonEmpty,
  port,
  positiveInt,
  readSettings,
  type SettingsOf,
  text,
} from '../common/settings.js';
import { definitions as sidecar } from '../sidecar/settings/settings.js';

export const definitions = {
  host: {
    env: 'NOX_ADMIN_HOST',
    default: '127.0.0.1',
    doc: 'Address the admin API listens on (0.0.0.0 in a pod).',
    parse: nonEmpty,
  },
  port: {
    env: 'NOX_ADMIN_PORT',
    default: 9100,
    doc: 'Port of the admin API, its OpenAPI document (/openapi.json), page (/), /metrics, /healthz and /readyz (0: any free port).',
    parse: port,
  },
  databaseUrl: {
    env: 'NOX_DATABASE_URL',
    default: '',
    doc: 'PostgreSQL connection string for writes (the PostgresCluster’s -rw Service, from its Secret). Required.',
    parse: nonEmpty,
  },
  databaseReadUrl: {
    env: 'NOX_DATABASE_READ_URL',
    default: '',
    doc: 'PostgreSQL connection string for reads (the -ro Service): searches, stats and exports go there, and to NOX_DATABASE_URL when it does not answer. Empty: reads go to NOX_DATABASE_URL.',
    parse: text,
  },
  kubeconfig: {
    env: 'NOX_KUBECONFIG',
    default: '',
    doc: 'kubeconfig for TokenReview and SubjectAccessReview; empty: in-cluster (the pod’s ServiceAccount), else ~/.kube/config.',
    parse: text,
  },
  authCacheMs: {
    env: 'NOX_ADMIN_AUTH_CACHE_MS',
    default: 10_000,
    doc: 'How long a TokenReview or SubjectAccessReview answer is reused for the same token and question (a revoked RBAC binding takes at most this long).',
    parse: positiveInt(300_000),
  },
  oidcIssuer: {
    env: 'NOX_ADMIN_OIDC_ISSUER',
    default: '',
    doc: 'Also accept ID/access tokens (JWT) from this OpenID issuer, besides Kubernetes tokens: the caller is <NOX_ADMIN_OIDC_PREFIX><sub> with its groups prefixed the same, and RBAC decides as for any user (bind ClusterRoles to User nox-admin-oidc:alice or Group nox-admin-oidc:auditors). Not the cluster’s ServiceAccount issuer (refused at start): those tokens go to TokenReview, which knows when they are revoked. Empty: Kubernetes tokens only.',
    parse: text,
  },
  oidcAudience: {
    env: 'NOX_ADMIN_OIDC_AUDIENCE',
    default: '',
    doc: 'The audience (aud) an OIDC token must carry; required with NOX_ADMIN_OIDC_ISSUER.',
    parse: text,
  },
  oidcGroupsClaim: {
    env: 'NOX_ADMIN_OIDC_GROUPS_CLAIM',
    default: 'groups',
    doc: 'The claim that lists an OIDC caller’s groups.',
    parse: text,
  },
  oidcPrefix: {
    env: 'NOX_ADMIN_OIDC_PREFIX',
    default: 'nox-admin-oidc:',
    doc: 'Put before an OIDC caller’s subject and groups, for RBAC. Not the API server’s own --oidc-username-prefix (often oidc:) unless it is the same issuer: a group of one provider must not match bindings made for another’s.',
    parse: text,
  },
  oidcGroup: {
    env: 'NOX_ADMIN_OIDC_GROUP',
    default: '',
    doc: 'When set, only OIDC callers in this group (before the prefix) are authenticated at all.',
    parse: text,
  },
  maxPageSize: {
    env: 'NOX_ADMIN_MAX_PAGE_SIZE',
    default: 1000,
    doc: 'The most rows one page of a search returns (limit).',
    parse: positiveInt(100_000),
  },
  // The sidecars' own Redis settings (same variables, same parsing): the admin API writes
  // revocations and reads sessions and quota counters where every sidecar does.
  quotaStore: {
    ...sidecar.quotaStore,
    doc: 'The sidecars’ quota store, as their NOX_QUOTA_STORE: redis or redis-cluster lets the admin API publish revocations (through the same Redis) and report live remaining quota; memory: neither (those routes answer 503).',
  },
  sessionStore: {
    ...sidecar.sessionStore,
    doc: 'The sidecars’ session store, as their NOX_SESSION_STORE: redis or redis-cluster lets the admin API list and revoke browser sessions; memory: it cannot (those routes answer 503).',
  },
  redisNodes: sidecar.redisNodes,
  redisPasswordFile: sidecar.redisPasswordFile,
  logLevel,
} as const satisfies Record<string, Definition<unknown>>;

export type AdminSettings = Readonly<SettingsOf<typeof definitions>>;

export function loadAdminSettings(env: NodeJS.ProcessEnv = process.env): AdminSettings {
  const { values, problems } = readSettings(definitions, env);
  if (!values.databaseUrl) problems.push('NOX_DATABASE_URL: required (the -rw connection string)');
  for (const [env, store] of [
    ['NOX_QUOTA_STORE', values.quotaStore],
    ['NOX_SESSION_STORE', values.sessionStore],
  ] as const)
    if (store !== 'memory' && values.redisNodes.length === 0)
      problems.push(`${env}=${store}: needs NOX_REDIS_NODES`);
  failIfProblems(problems);
  return Object.freeze(values);
}

export function describeAdminSettings(): string {
  return describeDefinitions(definitions);
}
