import { requireCurrentSchema } from '../common/db/migrate.js';
import { loadKubeAccess } from '../common/kube/access.js';
import { isNotFound, KubeClient } from '../common/kube/client.js';
import type { Logger } from '../common/logger.js';
import { runMain, startProgram } from '../common/program.js';
import type { QuotaPolicySpec } from '../common/resources/types.gen.js';
import { KubeAuth } from './auth.js';
import { Databases } from './db.js';
import { connectAdminRedis } from './redis.js';
import { buildAdminServer } from './server.js';
import { describeAdminSettings, loadAdminSettings } from './settings.js';

/** nox-admin: the admin API. Settings come from the environment (see --help). */
async function main(): Promise<void> {
  const program = startProgram({
    name: 'nox-admin',
    title: 'the Nox admin API',
    describeSettings: describeAdminSettings,
    loadSettings: loadAdminSettings,
  });
  if (!program) return;
  const { settings, log, registry } = program;
  if (settings.oidcIssuer && !settings.oidcAudience)
    throw new Error('NOX_ADMIN_OIDC_AUDIENCE is required with NOX_ADMIN_OIDC_ISSUER');
  const db = new Databases(settings.databaseUrl, settings.databaseReadUrl, log);
  await requireCurrentSchema(db.rw, log, 'this admin API');
  // Not client-node's KubeConfig: the light loader keeps ~75 MB out of the process (access.ts).
  const kube = new KubeClient(await loadKubeAccess(settings.kubeconfig || undefined));
  if (settings.oidcIssuer) await refuseServiceAccountIssuer(kube, settings.oidcIssuer, log);
  const redis = await connectAdminRedis(settings, log, registry);
  const app = await buildAdminServer({
    db,
    auth: new KubeAuth(
      kube,
      settings.authCacheMs,
      Date.now,
      settings.oidcIssuer
        ? {
            issuer: settings.oidcIssuer,
            audience: settings.oidcAudience,
            groupsClaim: settings.oidcGroupsClaim,
            prefix: settings.oidcPrefix,
            ...(settings.oidcGroup ? { requiredGroup: settings.oidcGroup } : {}),
          }
        : undefined,
    ),
    log,
    registry,
    maxPageSize: settings.maxPageSize,
    redis,
    // Read with the admin API's own ServiceAccount (the chart grants it get on quotapolicies).
    quotaPolicy: async (namespace, name) => {
      try {
        const o = await kube.request<{ spec: QuotaPolicySpec }>(
          'GET',
          `/apis/nox.dev/v1alpha1/namespaces/${encodeURIComponent(namespace)}/quotapolicies/${encodeURIComponent(name)}`,
          { timeoutMs: 5000 },
        );
        return o.spec;
      } catch (e) {
        if (isNotFound(e)) return undefined;
        throw e;
      }
    },
  });
  const address = await app.listen({ host: settings.host, port: settings.port });
  const port = app.server.address();
  log.info(
    { address, port: typeof port === 'object' && port ? port.port : settings.port },
    'nox-admin listening',
  );

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    await app.close();
    await Promise.all([db.close(), redis.close()]);
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

runMain('nox-admin', main);

/**
 * The cluster's ServiceAccount tokens must go to TokenReview, which knows when their pod or
 * ServiceAccount is gone; verified locally as OIDC tokens they would stay good until they
 * expire. Asked of the API server's discovery document; one that cannot be read is no answer.
 */
async function refuseServiceAccountIssuer(kube: KubeClient, issuer: string, log: Logger): Promise<void> {
  let clusterIssuer: string | undefined;
  try {
    clusterIssuer = (
      await kube.request<{ issuer?: string }>('GET', '/.well-known/openid-configuration', { timeoutMs: 5000 })
    ).issuer;
  } catch (e) {
    log.info({ err: (e as Error).message }, 'the cluster’s ServiceAccount issuer could not be read');
  }
  if (clusterIssuer === issuer)
    throw new Error(
      `NOX_ADMIN_OIDC_ISSUER is the cluster's ServiceAccount issuer (${issuer}): its tokens are checked by TokenReview already`,
    );
}
