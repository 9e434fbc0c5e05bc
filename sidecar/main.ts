import { readFileSync } from 'node:fs';
import type pg from 'pg';
import { startHttpServer } from '../common/httpServer.js';
import { createLogger } from '../common/logger.js';
import { createRegistry } from '../common/metrics.js';
import { configSourceFor } from './config/sources.js';
import { IdentifyStage } from './identity/identifyStage.js';
import { identityMethodsFor } from './identity/methods.js';
import { Pipeline } from './pipeline/pipeline.js';
import { PolicyStore } from './policy/store.js';
import type { OverrideStore } from './quota/overrides.js';
import { QuotaStage } from './quota/quotaStage.js';
import { parseNodes, quotaStoreFor, revocationsFor } from './quota/stores.js';
import type { UsageRollup } from './quota/usageRollup.js';
import { secretStoreFor } from './secrets/stores.js';
import { Checker } from './server/checker.js';
import { startGrpcServer } from './server/grpcServer.js';
import { describeSettings, loadSettings, type Settings } from './settings/settings.js';
import { accessStage } from './stages/access.js';
import { routeStage } from './stages/route.js';

/** nox-authz: the Envoy ext_authz sidecar. Settings come from the environment (see --help). */
async function main(): Promise<void> {
  if (process.argv.includes('--help')) {
    process.stdout.write(
      `nox-authz: Envoy ext_authz server\n\nSettings (environment):\n${describeSettings()}\n`,
    );
    return;
  }
  let settings: Settings;
  try {
    settings = loadSettings();
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(2);
  }
  const log = createLogger('nox-authz', { level: settings.logLevel });
  const registry = createRegistry('nox-authz');
  process.on('unhandledRejection', (reason) => {
    log.error({ err: String(reason) }, 'unhandled rejection');
  });

  const policy = new PolicyStore(log, registry);
  const quotaStore = await quotaStoreFor(settings, log, registry);
  const revocations = await revocationsFor(settings, log, registry);
  await revocations.start();
  // PostgreSQL is never on the hot path: overrides are polled into memory, usage is batched.
  let db: { pool: pg.Pool; overrides: OverrideStore; usage: UsageRollup } | undefined;
  if (settings.databaseUrl) {
    const [{ default: pgLib }, { OverrideStore }, { UsageRollup }] = await Promise.all([
      import('pg'),
      import('./quota/overrides.js'),
      import('./quota/usageRollup.js'),
    ]);
    const pool = new pgLib.Pool({
      connectionString: settings.databaseUrl,
      max: 4,
      connectionTimeoutMillis: 2000,
      query_timeout: 5000,
    });
    pool.on('error', (err) => log.warn({ err: err.message }, 'postgres connection error'));
    db = {
      pool,
      overrides: new OverrideStore(pool, log, registry),
      usage: new UsageRollup({ pool, registry, log }),
    };
    await db.overrides.start();
  } else {
    log.info('NOX_DATABASE_URL is not set: no quota overrides, no usage rollups');
  }
  const profiles = db
    ? new (await import('./identity/profileSync.js')).ProfileSync(db.pool, log, registry, () =>
        [...(policy.current?.providers ?? [])].filter(([, p]) => p.linkAccountsByEmail).map(([k]) => k),
      )
    : undefined;
  const secrets = await secretStoreFor(settings, log, registry);
  await secrets.start();
  const { createLogin, sessionStoreFor } = await import('./login/wiring.js');
  const sessions = await sessionStoreFor(
    {
      kind: settings.sessionStore,
      nodes: parseNodes(settings.redisNodes),
      ...(settings.redisPasswordFile
        ? { password: readFileSync(settings.redisPasswordFile, 'utf8').trim() }
        : {}),
      timeoutMs: settings.sessionTimeoutMs,
    },
    log,
  );
  const login = createLogin({ store: sessions, secrets, log, registry });
  const methods = await identityMethodsFor(
    settings,
    secrets,
    revocations,
    { session: login.method },
    registry,
  );
  const identify = new IdentifyStage(methods, registry, {
    revocations,
    ...(profiles ? { profiles } : {}),
    linkByEmail: (key) => policy.current?.providers.get(key)?.linkAccountsByEmail === true,
  });
  policy.onSwap((s) => identify.onSnapshot(s));
  const quotaStage = new QuotaStage(
    quotaStore,
    registry,
    db ? { overrides: db.overrides, usage: db.usage } : {},
  );
  const pipeline = new Pipeline(
    [login.stage, routeStage, identify, login.wrapAccess(accessStage), quotaStage],
    log,
    registry,
  );
  const checker = new Checker(pipeline, policy, settings.checkDeadlineMs, log, registry);
  let draining = false;
  const grpcServer = await startGrpcServer(checker, settings.grpcHost, settings.grpcPort, log);
  const source = await configSourceFor(settings, log, registry);
  const httpServer = await startHttpServer(
    registry,
    {
      live: () => ({ ok: true, reason: 'serving' }),
      ready: () => {
        if (draining) return { ok: false, reason: 'draining' };
        if (!policy.current) return { ok: false, reason: 'no policy snapshot loaded' };
        return { ok: true, reason: `policy snapshot ${policy.current.version}` };
      },
    },
    settings.httpHost,
    settings.httpPort,
    log,
  );
  policy.onSwap(() => grpcServer.setServing(!draining));
  if (source) {
    // Checks arriving before the first snapshot are denied NOT_READY, never allowed.
    source
      .start((state) => policy.apply(state))
      .catch((e: unknown) => {
        log.fatal({ err: String(e) }, 'configuration source failed to start');
        process.exit(1);
      });
  } else {
    log.warn('no policy source configured (NOX_POLICY_PATH is empty): every check is denied with NOT_READY');
  }
  // One line tests and scripts can wait for, with the ports actually bound.
  log.info(
    { grpcPort: grpcServer.port, httpPort: httpServer.port, source: settings.configSource },
    'nox-authz listening',
  );

  const shutdown = async (signal: string) => {
    if (draining) return;
    draining = true;
    log.info({ signal, inFlight: checker.inFlight }, 'draining');
    grpcServer.setServing(false);
    // In-flight checks finish normally; a check that races in after this point is
    // answered SHUTTING_DOWN rather than left hanging.
    void checker.drain();
    await grpcServer.shutdown(settings.drainTimeoutMs);
    await login.close();
    await source?.stop();
    await quotaStore.close();
    await revocations.stop();
    await secrets.stop();
    await profiles?.close();
    if (db) {
      db.overrides.stop();
      await db.usage.close().catch((e: unknown) => log.error({ err: String(e) }, 'last usage flush failed'));
      await db.pool.end();
    }
    await httpServer.close();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    if (source && 'reload' in source && typeof source.reload === 'function') void source.reload();
  });
}

void main();
