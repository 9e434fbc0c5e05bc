import type { Registry } from 'prom-client';
import {
  decodeBase64Values,
  identityMeta,
  type KubeClient,
  type KubeObject,
} from '../../common/kube/client.js';
import { Informer, startAndSync, watchMetrics } from '../../common/kube/informer.js';
import { configMaps } from '../../common/kube/resources.js';
import type { Logger } from '../../common/logger.js';
import { publishedDigest, RISK_MODEL_LABEL } from '../../common/resources/kinds/riskModel.js';
import { counterOn, gaugeOn } from '../config/source.js';
import type { ModelStore, StoredModel } from './modelStore.js';

interface StoredConfigMap extends KubeObject {
  readonly binaryData: Readonly<Record<string, Uint8Array>>;
  readonly publishedSha256: string | undefined;
}

export interface KubeModelStoreOptions {
  client: KubeClient;
  /** Namespaces to read; empty: all namespaces. */
  namespaces: readonly string[];
  log: Logger;
  registry: Registry;
  startTimeoutMs?: number;
}

/**
 * The model ConfigMaps (labelled nox.dev/risk-model=true) of the served namespaces, kept by
 * the shared informer: a model published to one reaches every sidecar through its watch.
 * Only labelled ConfigMaps, so that the sidecar does not hold every ConfigMap of a namespace
 * in memory. RBAC: get, list, watch on configmaps in those namespaces.
 */
export class KubeModelStore implements ModelStore {
  readonly unavailable = undefined;
  readonly #informer: Informer<StoredConfigMap>;
  readonly #abort = new AbortController();
  readonly #listeners: (() => void)[] = [];
  readonly #log: Logger;

  constructor(private readonly opts: KubeModelStoreOptions) {
    this.#log = opts.log.child({ component: 'model-store', source: 'k8s' });
    const healthy = gaugeOn(
      opts.registry,
      'nox_risk_model_configmaps_watch_healthy',
      '1 while the list+watch of model ConfigMaps is established, 0 while it is being re-established.',
      [],
    );
    const restarts = counterOn(
      opts.registry,
      'nox_risk_model_configmaps_watch_restarts_total',
      'Model ConfigMap list+watch restarts by reason: error, expired (410 Gone: relisted), stalled.',
      ['reason'],
    );
    this.#informer = new Informer<StoredConfigMap>({
      client: opts.client,
      resource: configMaps,
      namespaces: opts.namespaces,
      labelSelector: `${RISK_MODEL_LABEL}=true`,
      transform: toStoredConfigMap,
      log: this.#log,
      metrics: watchMetrics({ healthy, restarts }, {}),
    });
    this.#informer.addHandler(() => {
      for (const l of this.#listeners) {
        try {
          l();
        } catch (e) {
          this.#log.error({ err: (e as Error).message }, 'model change listener threw');
        }
      }
    });
  }

  get(namespace: string, name: string, key: string): StoredModel | undefined {
    const cm = this.#informer.get({ namespace, name });
    const bytes = cm?.binaryData[key];
    return cm && bytes ? { bytes, publishedSha256: cm.publishedSha256 } : undefined;
  }

  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  async start(): Promise<void> {
    await startAndSync([this.#informer], this.#abort, this.opts.startTimeoutMs ?? 60_000, 'model ConfigMaps');
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#informer.stopped();
  }
}

function toStoredConfigMap(
  obj: KubeObject & {
    binaryData?: Record<string, string>;
    metadata: { annotations?: Record<string, string> };
  },
): StoredConfigMap {
  return {
    metadata: identityMeta(obj.metadata),
    binaryData: decodeBase64Values(obj.binaryData),
    publishedSha256: publishedDigest(obj.metadata),
  };
}
