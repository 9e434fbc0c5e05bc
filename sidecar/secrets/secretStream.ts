import { ApiException, type CoreV1Api, type Watch } from '@kubernetes/client-node';
import type { Logger } from '../../common/logger.js';
import { type BackoffOptions, backoffDelay, sleep } from '../config/source.js';

export interface StoredSecret {
  readonly labels: Readonly<Record<string, string>>;
  readonly data: Readonly<Record<string, Buffer>>;
}
interface RawSecret {
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string>; resourceVersion?: string };
  data?: Record<string, string>;
}

/** 410 Gone: the resourceVersion held is older than the server's history, so only a relist helps. */
class Expired extends Error {}
/** The watch sent nothing, not even its end, for longer than it promised: the connection is dead. */
class Stalled extends Error {}

// Helm keeps every release revision in a Secret (often hundreds of kB each); none is ever a Nox credential.
const FIELD_SELECTOR = 'type!=helm.sh/release.v1';

export interface StreamDeps {
  api: CoreV1Api;
  watch: Watch;
  log: Logger;
  signal: AbortSignal;
  backoff: BackoffOptions;
  watchTimeoutSeconds: number;
  requestTimeoutMs: number;
  onChange(): void;
  onHealth(): void;
  onRestart(reason: 'error' | 'expired' | 'stalled'): void;
}

/** One list+watch of the Secrets of one namespace (or all): "namespace/name" → Secret. */
export class SecretStream {
  objects = new Map<string, StoredSecret>();
  synced = false;
  healthy = false;
  lastError = 'pending';
  #resourceVersion = '';
  #failures = 0;
  #lastExpiredAt = 0;

  constructor(
    readonly namespace: string | undefined,
    private readonly deps: StreamDeps,
  ) {}

  describe(): string {
    return `secrets in ${this.namespace ?? 'all namespaces'}`;
  }

  async run(): Promise<void> {
    const { signal, backoff, log } = this.deps;
    while (!signal.aborted) {
      try {
        if (!this.#resourceVersion) await this.#list();
        const openedAt = Date.now();
        await this.#watch();
        if (Date.now() - openedAt < 1000) await sleep(backoffDelay(this.#failures++, backoff), signal);
      } catch (e) {
        if (signal.aborted) break;
        const reason = e instanceof Expired ? 'expired' : e instanceof Stalled ? 'stalled' : 'error';
        this.deps.onRestart(reason);
        this.lastError = describeError(e);
        if (reason === 'expired') {
          this.#resourceVersion = '';
          // Relist at once, unless the previous relist expired too: then it is a loop, so back off.
          const recent = Date.now() - this.#lastExpiredAt < 5000;
          this.#lastExpiredAt = Date.now();
          if (!recent) continue;
        } else this.#setHealthy(false);
        const delayMs = backoffDelay(this.#failures++, backoff);
        log.warn({ err: this.lastError, reason, delayMs }, 'secret list+watch failed; retrying');
        await sleep(delayMs, signal);
      }
    }
    this.#setHealthy(false);
  }

  #setHealthy(ok: boolean): void {
    if (this.healthy === ok) return;
    this.healthy = ok;
    this.deps.onHealth();
  }

  async #list(): Promise<void> {
    const next = new Map<string, StoredSecret>();
    let cont: string | undefined;
    let rv = '';
    do {
      const base = { limit: 500, fieldSelector: FIELD_SELECTOR, ...(cont ? { _continue: cont } : {}) };
      const call = this.namespace
        ? this.deps.api.listNamespacedSecret({ ...base, namespace: this.namespace })
        : this.deps.api.listSecretForAllNamespaces(base);
      const page = await withTimeout(call, this.deps.requestTimeoutMs);
      for (const s of page.items) store(next, s as RawSecret);
      cont = page.metadata?._continue || undefined;
      rv = page.metadata?.resourceVersion ?? '';
    } while (cont);
    this.objects = next;
    this.#resourceVersion = rv;
    this.synced = true;
    this.#failures = 0;
    this.#setHealthy(true);
    this.deps.onChange();
  }

  #watch(): Promise<void> {
    const path = `/api/v1/${this.namespace ? `namespaces/${this.namespace}/` : ''}secrets`;
    const timeoutSeconds = Math.round(this.deps.watchTimeoutSeconds * (1 + Math.random() / 2));
    const query = {
      resourceVersion: this.#resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds,
      fieldSelector: FIELD_SELECTOR,
    };
    const { signal } = this.deps;
    return new Promise<void>((resolve, reject) => {
      let request: AbortController | undefined;
      let settled = false;
      const finish = (err?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(stallTimer);
        signal.removeEventListener('abort', cancel);
        request?.abort();
        if (err) reject(err);
        else resolve();
      };
      const cancel = () => finish(new Error('stopped'));
      // The server promised to end the watch by timeoutSeconds; silence past that is a dead connection.
      const stallTimer = setTimeout(
        () => finish(new Stalled(`no end of watch after ${timeoutSeconds + 30} s`)),
        (timeoutSeconds + 30) * 1000,
      );
      signal.addEventListener('abort', cancel, { once: true });
      const onEvent = (type: string, obj: RawSecret & { code?: number; message?: string }) => {
        if (type === 'ERROR') {
          const why = `watch error event ${obj.code}: ${obj.message}`;
          finish(obj.code === 410 ? new Expired(why) : new Error(why));
          return;
        }
        if (type === 'DELETED') this.objects.delete(`${obj.metadata?.namespace}/${obj.metadata?.name}`);
        else if (type === 'ADDED' || type === 'MODIFIED') store(this.objects, obj);
        if (obj.metadata?.resourceVersion) this.#resourceVersion = obj.metadata.resourceVersion;
        if (type !== 'BOOKMARK') this.deps.onChange();
      };
      const onDone = (err: unknown) => {
        const status = (err as { statusCode?: number } | null)?.statusCode;
        finish(status === 410 ? new Expired('watch HTTP 410') : (err ?? undefined));
      };
      this.deps.watch.watch(path, query, onEvent, onDone).then(
        (controller) => {
          request = controller;
          if (settled) controller.abort();
          else {
            this.#failures = 0;
            this.#setHealthy(true);
          }
        },
        (e: unknown) => finish(e),
      );
    });
  }
}

function store(into: Map<string, StoredSecret>, s: RawSecret): void {
  const m = s.metadata;
  if (!m?.name || !m.namespace) return;
  const data: Record<string, Buffer> = {};
  for (const [k, v] of Object.entries(s.data ?? {})) data[k] = Buffer.from(v, 'base64');
  into.set(`${m.namespace}/${m.name}`, { labels: { ...(m.labels ?? {}) }, data });
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('list timed out')), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } catch (e) {
    if (e instanceof ApiException && e.code === 410) throw new Expired(describeError(e));
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** One line for logs: ApiException's own message carries the whole response, headers included. */
function describeError(e: unknown): string {
  if (e instanceof ApiException) return `HTTP ${e.code}`;
  return e instanceof Error ? e.message : String(e);
}
