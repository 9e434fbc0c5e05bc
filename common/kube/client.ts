import http from 'node:http';
import https from 'node:https';
import { createInterface } from 'node:readline';
import type { KubeAccess } from './access.js';

/**
 * A small REST client for the Kubernetes API, for any resource (core, apps, coordination,
 * nox.dev, ...): get, list (paged), server-side apply (also of status), delete, update, and
 * watch streams. Authentication and TLS come from a KubeAccess (access.ts: client-node's
 * KubeConfig, with kubeconfig files, the in-cluster ServiceAccount and exec plugins, or the
 * light loader for the common cases); the requests themselves are plain node:https so every
 * one has a deadline and can be cancelled.
 */

export interface ResourceType {
  /** '' for the core group. */
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly plural: string;
  readonly namespaced: boolean;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
  finalizers?: string[];
  deletionTimestamp?: string;
  creationTimestamp?: string;
}

/** What every object the operator handles has; the rest is the kind's business. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

export interface KubeList<T> {
  items: T[];
  metadata: { resourceVersion?: string; continue?: string };
}

export function apiVersionOf(r: Pick<ResourceType, 'group' | 'version'>): string {
  return r.group ? `${r.group}/${r.version}` : r.version;
}

export function groupOf(apiVersion: string): string {
  const i = apiVersion.indexOf('/');
  return i < 0 ? '' : apiVersion.slice(0, i);
}

/** e.g. `quotapolicies.nox.dev`, `secrets`: the name RBAC and logs use. */
export function describeType(r: ResourceType): string {
  return r.group ? `${r.plural}.${r.group}` : r.plural;
}

/** /api/v1/namespaces/ns/secrets, /apis/nox.dev/v1alpha1/riskmodels (all namespaces), ... */
export function collectionPath(r: ResourceType, namespace?: string): string {
  const base = r.group ? `/apis/${r.group}/${r.version}` : `/api/${r.version}`;
  return r.namespaced && namespace
    ? `${base}/namespaces/${encodeURIComponent(namespace)}/${r.plural}`
    : `${base}/${r.plural}`;
}

export function objectPath(
  r: ResourceType,
  key: { namespace?: string | undefined; name: string },
  subresource?: string,
): string {
  if (r.namespaced && !key.namespace) throw new Error(`${r.kind} ${key.name}: a namespace is required`);
  return `${collectionPath(r, key.namespace)}/${encodeURIComponent(key.name)}${subresource ? `/${subresource}` : ''}`;
}

/** A non-2xx answer of the API server, with the fields of its Status body. */
export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';
  constructor(
    readonly code: number,
    /** Status.reason, e.g. NotFound, Conflict, Expired, Forbidden. */
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export const isNotFound = (e: unknown): boolean => e instanceof KubeApiError && e.code === 404;
export const isConflict = (e: unknown): boolean => e instanceof KubeApiError && e.code === 409;

/**
 * One line for logs: the code and the API server's message, never a whole response (an
 * ApiException of @kubernetes/client-node carries the request and response in its message,
 * a TokenReview's token included, so only its code and Status message are kept).
 */
export function describeError(e: unknown): string {
  if (e instanceof KubeApiError) return `HTTP ${e.code} ${e.reason}: ${e.message}`;
  if (isClientNodeApiException(e)) {
    const message = statusMessage(e.body);
    return `HTTP ${e.code}${message ? `: ${message}` : ''}`;
  }
  return e instanceof Error ? e.message : String(e);
}

// Duck-typed so that this module does not load @kubernetes/client-node.
function isClientNodeApiException(e: unknown): e is { code: number; body: unknown } {
  return (
    e instanceof Error &&
    e.constructor.name === 'ApiException' &&
    typeof (e as { code?: unknown }).code === 'number'
  );
}

function statusMessage(body: unknown): string {
  if (body && typeof body === 'object') return String((body as { message?: unknown }).message ?? '');
  if (typeof body !== 'string') return '';
  try {
    return String((JSON.parse(body) as { message?: unknown }).message ?? '');
  } catch {
    return '';
  }
}

type TlsOptions = Pick<
  https.AgentOptions,
  'ca' | 'cert' | 'key' | 'pfx' | 'passphrase' | 'rejectUnauthorized' | 'servername'
>;

type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query;
  /** An object is sent as JSON; a string as is. */
  body?: unknown;
  contentType?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: KubeObject & { code?: number; reason?: string; message?: string };
}

/** Which objects a list reads (one namespace, or all; selectors), and how long it may take. */
export interface ListOptions {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface KubeClientOptions {
  /** Deadline of an ordinary request (not of a watch). Default 30 s. */
  requestTimeoutMs?: number;
  /** The server-side apply field manager, also the User-Agent unless one is given. */
  fieldManager?: string;
  userAgent?: string;
}

export class KubeClient {
  readonly #kc: KubeAccess;
  readonly #server: URL;
  readonly #timeoutMs: number;
  readonly #userAgent: string;
  readonly #fieldManager: string;
  #agent: http.Agent | undefined;

  constructor(kc: KubeAccess, opts: KubeClientOptions = {}) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster');
    this.#kc = kc;
    this.#server = new URL(cluster.server);
    this.#timeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.#fieldManager = opts.fieldManager ?? 'nox';
    this.#userAgent = opts.userAgent ?? this.#fieldManager;
  }

  get server(): string {
    return this.#server.origin;
  }

  /** TLS material and auth headers, applied per request (tokens may rotate). */
  async #base(): Promise<https.RequestOptions> {
    const opts: https.RequestOptions = {};
    await this.#kc.applyToHTTPSOptions(opts);
    return opts;
  }

  #transport(): typeof https | typeof http {
    return this.#server.protocol === 'http:' ? http : https;
  }

  #url(path: string, query?: Query): URL {
    const url = new URL(path, this.#server);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    return url;
  }

  #tls(base: https.RequestOptions): TlsOptions {
    const { ca, cert, key, pfx, passphrase, rejectUnauthorized, servername } = base;
    return { ca, cert, key, pfx, passphrase, rejectUnauthorized, servername };
  }

  /** One keep-alive agent for ordinary requests (watches get connections of their own). */
  #agentFor(base: https.RequestOptions): http.Agent {
    if (!this.#agent) {
      this.#agent =
        this.#server.protocol === 'http:'
          ? new http.Agent({ keepAlive: true, maxSockets: 16 })
          : new https.Agent({ keepAlive: true, maxSockets: 16, ...this.#tls(base) });
    }
    return this.#agent;
  }

  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const base = await this.#base();
    const url = this.#url(path, opts.query);
    const body =
      opts.body === undefined
        ? undefined
        : typeof opts.body === 'string'
          ? opts.body
          : JSON.stringify(opts.body);
    const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const finish = (err: unknown, value?: T) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(value as T);
      };
      const req = this.#transport().request(
        url,
        {
          ...this.#tls(base),
          method,
          agent: this.#agentFor(base),
          headers: {
            ...(base.headers as Record<string, string> | undefined),
            accept: 'application/json',
            'user-agent': this.#userAgent,
            ...(body !== undefined
              ? {
                  'content-type': opts.contentType ?? 'application/json',
                  'content-length': Buffer.byteLength(body),
                }
              : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (e) => finish(e));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            let parsed: unknown;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              parsed = undefined;
            }
            if (status >= 200 && status < 300) finish(undefined, parsed as T);
            else finish(apiError(status, parsed, text, `${method} ${url.pathname}`));
          });
        },
      );
      const timer = setTimeout(
        () => req.destroy(new Error(`${method} ${url.pathname} timed out after ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onAbort = () => req.destroy(new Error('aborted'));
      // The signal may have fired while the credentials were read: an abort event is not replayed.
      if (opts.signal?.aborted) onAbort();
      else opts.signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (e) => finish(e));
      if (body !== undefined) req.write(body);
      req.end();
    });
  }

  /** The object, or undefined when it does not exist. */
  async get<T extends KubeObject>(
    r: ResourceType,
    key: { namespace?: string; name: string },
  ): Promise<T | undefined> {
    try {
      return await this.request<T>('GET', objectPath(r, key));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** One page of a list. */
  listPage<T extends KubeObject>(
    r: ResourceType,
    opts: ListOptions & { limit?: number; continue?: string } = {},
  ): Promise<KubeList<T>> {
    return this.request<KubeList<T>>('GET', collectionPath(r, opts.namespace), {
      query: {
        labelSelector: opts.labelSelector,
        fieldSelector: opts.fieldSelector,
        limit: opts.limit ?? 500,
        continue: opts.continue,
      },
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}),
    });
  }

  /** Every object (all pages), with the list's resourceVersion. */
  async list<T extends KubeObject>(r: ResourceType, opts: ListOptions = {}): Promise<KubeList<T>> {
    const items: T[] = [];
    let next: string | undefined;
    let page: KubeList<T>;
    do {
      page = await this.listPage<T>(r, { ...opts, ...(next ? { continue: next } : {}) });
      items.push(...(page.items ?? []));
      next = page.metadata?.continue || undefined;
    } while (next);
    return {
      items,
      metadata: {
        ...(page.metadata?.resourceVersion ? { resourceVersion: page.metadata.resourceVersion } : {}),
      },
    };
  }

  /** Server-side apply (`PATCH application/apply-patch+yaml`, force) of `obj`, or of its status. */
  apply<T extends KubeObject>(
    r: ResourceType,
    obj: T,
    opts: { subresource?: 'status'; manager?: string } = {},
  ): Promise<T> {
    const { managedFields: _ignored, ...metadata } = obj.metadata as ObjectMeta & { managedFields?: unknown };
    return this.request<T>('PATCH', objectPath(r, obj.metadata, opts.subresource), {
      query: { fieldManager: opts.manager ?? this.#fieldManager, force: true },
      // JSON is YAML: the API server parses either.
      body: { ...obj, apiVersion: apiVersionOf(r), kind: r.kind, metadata },
      contentType: 'application/apply-patch+yaml',
    });
  }

  create<T extends KubeObject>(r: ResourceType, obj: T): Promise<T> {
    return this.request<T>('POST', collectionPath(r, obj.metadata.namespace), {
      body: { ...obj, apiVersion: apiVersionOf(r), kind: r.kind },
    });
  }

  /** PUT: fails with 409 if `obj.metadata.resourceVersion` is not the current one. */
  update<T extends KubeObject>(r: ResourceType, obj: T, opts: { timeoutMs?: number } = {}): Promise<T> {
    return this.request<T>('PUT', objectPath(r, obj.metadata), {
      body: { ...obj, apiVersion: apiVersionOf(r), kind: r.kind },
      ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}),
    });
  }

  /** Deletes in the background (dependents are collected by the garbage collector); absent is fine. */
  async delete(
    r: ResourceType,
    key: { namespace?: string; name: string },
    opts: { uid?: string } = {},
  ): Promise<void> {
    try {
      await this.request('DELETE', objectPath(r, key), {
        body: {
          apiVersion: 'v1',
          kind: 'DeleteOptions',
          propagationPolicy: 'Background',
          ...(opts.uid ? { preconditions: { uid: opts.uid } } : {}),
        },
      });
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  /**
   * A watch stream from `resourceVersion`: `onOpen` when the server answered 200, `onEvent`
   * per line. Resolves when the server ends the stream; rejects on a non-200 answer (a
   * KubeApiError) or a broken connection. Aborting `signal` closes it (and resolves).
   */
  async watch(
    r: ResourceType,
    opts: {
      namespace?: string;
      resourceVersion: string;
      labelSelector?: string;
      fieldSelector?: string;
      timeoutSeconds: number;
      signal: AbortSignal;
      onOpen(): void;
      onEvent(e: WatchEvent): void;
    },
  ): Promise<void> {
    if (opts.signal.aborted) return;
    const base = await this.#base();
    const url = this.#url(collectionPath(r, opts.namespace), {
      watch: true,
      resourceVersion: opts.resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds: opts.timeoutSeconds,
      labelSelector: opts.labelSelector,
      fieldSelector: opts.fieldSelector,
    });
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const finish = (err?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(connectTimer);
        opts.signal.removeEventListener('abort', onAbort);
        req.destroy();
        if (err && !opts.signal.aborted) reject(err);
        else resolve();
      };
      const req = this.#transport().request(
        url,
        {
          ...this.#tls(base),
          method: 'GET',
          // A connection of its own: a long-lived stream must not hold a pooled socket.
          agent: false,
          headers: {
            ...(base.headers as Record<string, string> | undefined),
            accept: 'application/json',
            'user-agent': this.#userAgent,
          },
        },
        (res) => {
          clearTimeout(connectTimer);
          const status = res.statusCode ?? 0;
          if (status !== 200) {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              let parsed: unknown;
              try {
                parsed = JSON.parse(text);
              } catch {
                parsed = undefined;
              }
              finish(apiError(status, parsed, text, `watch ${url.pathname}`));
            });
            res.on('error', (e) => finish(e));
            return;
          }
          opts.onOpen();
          const lines = createInterface({ input: res, crlfDelay: Number.POSITIVE_INFINITY });
          // readline re-emits the response's errors (ECONNRESET when the API server goes away).
          lines.on('error', (e) => finish(e));
          lines.on('line', (line) => {
            if (settled || !line) return;
            let event: WatchEvent;
            try {
              event = JSON.parse(line) as WatchEvent;
            } catch {
              return;
            }
            opts.onEvent(event);
          });
          res.on('error', (e) => finish(e));
          res.on('aborted', () => finish(new Error('watch connection aborted')));
          res.on('end', () => finish());
          res.on('close', () => finish());
        },
      );
      req.on('socket', (s) => s.setKeepAlive(true, 30_000));
      req.on('error', (e) => finish(e));
      // Headers must arrive quickly; the stream itself may stay quiet for long.
      const connectTimer = setTimeout(
        () => finish(new Error(`watch ${url.pathname}: no answer within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
      const onAbort = () => finish();
      // The signal may have fired while the credentials were read: an abort event is not replayed,
      // and a missed one would hold the stream open until the server's timeout.
      if (opts.signal.aborted) onAbort();
      else opts.signal.addEventListener('abort', onAbort, { once: true });
      req.end();
    });
  }

  /** Closes pooled connections. */
  close(): void {
    this.#agent?.destroy();
    this.#agent = undefined;
  }
}

function apiError(status: number, parsed: unknown, text: string, what: string): KubeApiError {
  const s = parsed as { kind?: string; reason?: string; message?: string } | undefined;
  if (s && s.kind === 'Status')
    return new KubeApiError(status, s.reason ?? '', s.message ?? text.slice(0, 500));
  return new KubeApiError(status, '', `${what}: ${text.slice(0, 500) || `HTTP ${status}`}`);
}

/**
 * What an informer's transform keeps of an object's metadata to know it again (its key, uid
 * and version), nothing else: a cache of summaries does not hold every label and annotation.
 */
export function identityMeta(m: ObjectMeta): ObjectMeta {
  return {
    name: m.name,
    ...(m.namespace ? { namespace: m.namespace } : {}),
    ...(m.uid ? { uid: m.uid } : {}),
    ...(m.resourceVersion ? { resourceVersion: m.resourceVersion } : {}),
  };
}

/** A Secret's data or a ConfigMap's binaryData, decoded. */
export function decodeBase64Values(
  values: Readonly<Record<string, string>> | undefined,
): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (const [k, v] of Object.entries(values ?? {})) out[k] = Buffer.from(v, 'base64');
  return out;
}
