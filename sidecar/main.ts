import { startHttpServer } from '../common/httpServer.js';
import { runMain, startProgram } from '../common/program.js';
import { parseAnyHostNamespaces } from '../common/resources/hostOwnership.js';
import { Pipeline } from './pipeline/pipeline.js';
import { PolicyStore } from './policy/store.js';
import { RiskModels } from './risk/models.js';
import { Checker } from './server/checker.js';
import { startGrpcServer } from './server/grpcServer.js';
import { describeSettings, loadSettings } from './settings/settings.js';
import { requestPath } from './stages/order.js';
import { QuotaStage } from './stages/quota.js';
import { BlockStage, RiskStage } from './stages/risk.js';
import { configSourceFor } from './wiring/config.js';
import { identifyStageFor, profileSyncFor } from './wiring/identity.js';
import { kubeFor } from './wiring/kube.js';
import { loginFor } from './wiring/login.js';
import { databaseFor } from './wiring/postgres.js';
import { quotaStoreFor, revocationsFor } from './wiring/quota.js';
import { redisTargetsFor } from './wiring/redis.js';
import { modelStoreFor } from './wiring/risk.js';
import { secretStoreFor } from './wiring/secrets.js';

/**
 * nox-authz: the Envoy ext_authz sidecar. Settings come from the environment (see --help).
 * What starts, in order, and what stops, in order; sidecar/wiring/ builds each part from
 * the settings, sidecar/stages/order.ts says what a check goes through.
 */
async function main(): Promise<void> {
  const program = startProgram({
    name: 'nox-authz',
    title: 'Envoy ext_authz server',
    describeSettings,
    loadSettings,
  });
  if (!program) return;
  const { settings, log, registry } = program;

  const policy = new PolicyStore(log, registry, {
    anyHostNamespaces: parseAnyHostNamespaces(settings.anyHostNamespaces),
  });
  const redis = redisTargetsFor(settings);
  const quotaStore = await quotaStoreFor(settings, redis, log, registry);
  const revocations = await revocationsFor(settings, redis, log, registry);
  await revocations.start();
  const db = await databaseFor(settings, log, registry);
  const profiles = await profileSyncFor(db, policy, log, registry);
  const kube = await kubeFor(settings);
  const secrets = await secretStoreFor(settings, kube, log, registry);
  await secrets.start();
  const login = await loginFor(settings, redis, secrets, log, registry);
  const audit = db?.audit;
  if (audit) login.login.onSessionEvent((e) => audit.sessionEvent(e));
  const models = await modelStoreFor(kube, log, registry);
  await models.start();
  const riskModels = new RiskModels(log, registry, models);
  const stages = requestPath({
    login: login.stage,
    identify: await identifyStageFor(
      settings,
      { kube, secrets, revocations, session: login.method, profiles, policy },
      registry,
    ),
    quota: new QuotaStage(quotaStore, registry, db ? { overrides: db.overrides, usage: db.usage } : {}),
    blocked: new BlockStage(revocations, registry),
    risk: new RiskStage(riskModels, quotaStore, registry, revocations),
  });
  policy.onSwap((s) => {
    for (const stage of stages) stage.onSnapshot?.(s);
  });
  const checker = new Checker(
    new Pipeline(stages, log, registry),
    policy,
    settings.checkDeadlineMs,
    log,
    registry,
    login.login.pages,
    // A login callback exchanges the code with the provider inside the check: its own budget.
    (input, s) =>
      login.login.providers.isCallback(s, input.host, input.path) ? settings.loginDeadlineMs : undefined,
    db?.audit,
  );
  let draining = false;
  const source = await configSourceFor(settings, kube, log, registry);
  // Checks arriving before the first snapshot wait for it within their deadline; those it
  // does not come for are denied NOT_READY, never allowed.
  if (source) policy.expectSource();
  const grpcServer = await startGrpcServer(checker, settings.grpcHost, settings.grpcPort, log);
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
    // The server's GOAWAY moves Envoy to another pod; every check on a stream accepted before it
    // gets its real decision, with the stores still open. Only then are late checks refused.
    await grpcServer.shutdown(settings.drainTimeoutMs);
    await checker.drain();
    checker.stop();
    await login.close();
    await source?.stop();
    await quotaStore.close();
    await riskModels.close();
    await models.stop();
    await revocations.stop();
    await secrets.stop();
    await profiles?.close();
    await db?.close();
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

runMain('nox-authz', main);
