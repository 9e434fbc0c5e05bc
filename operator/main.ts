import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { loadKubeConfig, parseNamespaces } from '../common/kube/config.js';
import { startProgram } from '../common/program.js';
import { parseAnyHostNamespaces } from '../common/resources/hostOwnership.js';
import { policyControllers } from './policies/policyStatus.js';
import { postgresClusterController } from './postgres/controller.js';
import { redisClusterController } from './redis/controller.js';
import { Manager } from './runtime/manager.js';
import { describeSettings, loadSettings, type Settings } from './settings.js';

const serviceAccountNamespace = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

function leaseNamespace(settings: Settings): string {
  if (settings.operatorNamespace) return settings.operatorNamespace;
  if (process.env.POD_NAMESPACE) return process.env.POD_NAMESPACE;
  try {
    return readFileSync(serviceAccountNamespace, 'utf8').trim() || 'default';
  } catch {
    return 'default';
  }
}

/** nox-operator: policy status, RedisClusters and PostgresClusters. Settings come from the environment (see --help). */
async function main(): Promise<void> {
  const program = startProgram({
    name: 'nox-operator',
    title: 'the Nox Kubernetes operator',
    describeSettings,
    loadSettings,
  });
  if (!program) return;
  const { settings, log, registry } = program;

  const kubeConfig = await loadKubeConfig(settings.kubeconfig || undefined);

  const identity =
    settings.identity || `${process.env.POD_NAME || hostname()}-${randomBytes(3).toString('hex')}`;
  const manager = new Manager({
    kubeConfig,
    log,
    registry,
    namespaces: parseNamespaces(settings.watchNamespaces),
    leaderElection: settings.leaderElection
      ? {
          namespace: leaseNamespace(settings),
          name: settings.leaseName,
          identity,
          leaseDurationMs: settings.leaseDurationMs,
          renewDeadlineMs: settings.renewDeadlineMs,
          retryPeriodMs: settings.retryPeriodMs,
        }
      : false,
    http: { host: settings.httpHost, port: settings.httpPort },
    requestTimeoutMs: settings.requestTimeoutMs,
    shutdownTimeoutMs: settings.shutdownTimeoutMs,
  });
  const controllerOptions = {
    concurrency: settings.reconcileConcurrency,
    resyncMs: settings.resyncMs,
    rateLimit: { baseDelayMs: settings.retryBaseMs, maxDelayMs: settings.retryMaxMs },
  };
  for (const c of policyControllers(manager, {
    ...controllerOptions,
    anyHostNamespaces: parseAnyHostNamespaces(settings.anyHostNamespaces),
    training: { image: settings.trainerImage },
  }))
    manager.add(c);
  manager.add(redisClusterController(manager, { ...controllerOptions, log }));
  manager.add(postgresClusterController(manager, { ...controllerOptions, log }));

  const { httpPort } = await manager.start();
  // One line tests and scripts can wait for, with the port actually bound.
  log.info(
    {
      httpPort,
      identity,
      leaderElection: settings.leaderElection,
      namespaces: settings.watchNamespaces || '*',
    },
    'nox-operator listening',
  );

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    // A stop that hangs (an API server that never answers) must not keep the pod alive forever.
    const force = setTimeout(() => {
      log.error('shutdown took too long; exiting');
      process.exit(1);
    }, settings.shutdownTimeoutMs + 15_000);
    force.unref();
    await manager.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

void main();
