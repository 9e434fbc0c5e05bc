import { createLogger } from '../common/logger.js';
import { createRegistry } from '../common/metrics.js';
import { Pipeline } from './pipeline/pipeline.js';
import { PolicyStore } from './policy/store.js';
import { Checker } from './server/checker.js';
import { startGrpcServer } from './server/grpcServer.js';
import { startHttpServer } from './server/httpServer.js';
import { describeSettings, loadSettings, type Settings } from './settings/settings.js';
import { pathPolicyStage } from './stages/pathPolicy.js';

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
  if (settings.policyFile) await policy.loadFile(settings.policyFile);
  else log.warn('NOX_POLICY_FILE is not set: every check is denied with NOT_READY');

  const pipeline = new Pipeline([pathPolicyStage], log, registry);
  const checker = new Checker(pipeline, policy, settings.checkDeadlineMs, log, registry);
  let draining = false;
  const grpcServer = await startGrpcServer(checker, settings.grpcHost, settings.grpcPort, log);
  const httpServer = await startHttpServer(
    registry,
    {
      live: () => true,
      ready: () => {
        if (draining) return { ready: false, reason: 'draining' };
        if (!policy.current) return { ready: false, reason: 'no policy snapshot loaded' };
        return { ready: true, reason: `policy snapshot ${policy.current.version}` };
      },
    },
    settings.httpHost,
    settings.httpPort,
    log,
  );
  grpcServer.setServing(policy.current !== undefined);
  // One line tests and scripts can wait for, with the ports actually bound.
  log.info({ grpcPort: grpcServer.port, httpPort: httpServer.port }, 'nox-authz ready');

  if (settings.policyFile) {
    process.on('SIGHUP', () => {
      void policy
        .loadFile(settings.policyFile)
        .then(() => grpcServer.setServing(policy.current !== undefined));
    });
  }

  const shutdown = async (signal: string) => {
    if (draining) return;
    draining = true;
    log.info({ signal, inFlight: checker.inFlight }, 'draining');
    grpcServer.setServing(false);
    // In-flight checks finish normally; a check that races in after this point is
    // answered SHUTTING_DOWN rather than left hanging.
    void checker.drain();
    await grpcServer.shutdown(settings.drainTimeoutMs);
    await httpServer.close();
    log.info('stopped');
    log.flush();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

void main();
