import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { type Service, scratchDir, start, waitUntil } from './process.js';
import { tool } from './tools.js';

export interface EnvoyOptions {
  /** gRPC port of the nox-authz sidecar. */
  authzPort: number;
  /** More sidecars Envoy balances checks over (round robin), beside authzPort. */
  moreAuthzPorts?: readonly number[];
  /** Its address: loopback (default), or a Service's ClusterIP on a test node. */
  authzHost?: string;
  /** HTTP port of the upstream service Envoy fronts. */
  upstreamPort: number;
  /** ext_authz timeout; the sidecar's deadline must be shorter. */
  authzTimeoutMs?: number;
  /** Envoy's answer when the authorization service fails or cannot be reached. */
  statusOnError?: number;
  listenPort?: number;
  /** Envoy worker threads; 1 keeps CPU for the sidecar on a 2-core machine. */
  concurrency?: number;
  /** Serve HTTPS with client certificates (mTLS) instead of plain HTTP. */
  tls?: EnvoyTls;
  /**
   * Login callback paths: their checks get loginTimeoutMs instead of authzTimeoutMs (a
   * per-route ext_authz service override), as the sidecar gives them NOX_LOGIN_DEADLINE_MS.
   */
  loginCallbackPaths?: readonly string[];
  loginTimeoutMs?: number;
  /** A file Envoy writes one line per request to: "<x-request-id> <status> <response flags>". */
  accessLogPath?: string;
}

/** A TLS listener that verifies client certificates (files in PEM). */
export interface EnvoyTls {
  /** The listener's certificate chain and key. */
  certChain: string;
  privateKey: string;
  /** CA certificates a client certificate must chain to. */
  clientCa: string;
  /**
   * true (default): a handshake without a client certificate fails. false: one is asked for,
   * and verified when sent, but a client may go without (Nox then sees no certificate).
   */
  requireClientCertificate?: boolean;
  /** A CRL of the client CA: a revoked client certificate fails the handshake. */
  crl?: string;
}

export interface Envoy {
  readonly port: number;
  readonly adminPort: number;
  readonly url: string;
  readonly service: Service;
  stop(): Promise<void>;
}

/**
 * The configuration Nox documents for Envoy: ext_authz over gRPC (v3), failing closed,
 * with path normalization so the path Nox judges is the path the upstream receives.
 */
export function envoyConfig(
  o: Required<Omit<EnvoyOptions, 'tls' | 'accessLogPath' | 'moreAuthzPorts'>> &
    Pick<EnvoyOptions, 'tls' | 'accessLogPath' | 'moreAuthzPorts'> & { adminPort: number },
): object {
  // Downstream mTLS: Envoy verifies the chain (and the CRL) in the handshake; the verified
  // certificate reaches Nox as attributes.source.certificate (include_peer_certificate).
  const tls = o.tls && {
    transport_socket: {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
        require_client_certificate: o.tls.requireClientCertificate ?? true,
        common_tls_context: {
          tls_certificates: [
            {
              certificate_chain: { filename: o.tls.certChain },
              private_key: { filename: o.tls.privateKey },
            },
          ],
          validation_context: {
            trusted_ca: { filename: o.tls.clientCa },
            ...(o.tls.crl ? { crl: { filename: o.tls.crl }, only_verify_leaf_cert_crl: true } : {}),
          },
        },
      },
    },
  };
  // As examples/gateways/envoy.yaml: the checks a stopping sidecar refused unread
  // (test/e2e/drain.test.ts), and those sent to one that no longer (or not yet) listens, go to
  // another instance; a check that reached a sidecar is never sent twice.
  const authzRetryPolicy = {
    retry_on: 'connect-failure,refused-stream',
    num_retries: 2,
    retry_host_predicate: [
      {
        name: 'envoy.retry_host_predicates.previous_hosts',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate',
        },
      },
    ],
  };
  const cluster = (name: string, address: string, ports: readonly number[], http2: boolean) => ({
    name,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: {
      cluster_name: name,
      endpoints: [
        {
          lb_endpoints: ports.map((port) => ({
            endpoint: { address: { socket_address: { address, port_value: port } } },
          })),
        },
      ],
    },
    ...(http2
      ? {
          // Envoy allows 3 retries in flight per cluster by default: a rolled ext_authz pod
          // refuses every check it had not read yet, all at once. And 1024 requests (and
          // retries) in flight: on this shared machine a sidecar descheduled for a second, or
          // restarting, at 1 000 checks/s has more, and Envoy would deny the rest (UAEX)
          // without ever asking a sidecar.
          circuit_breakers: {
            thresholds: [{ max_retries: 65_536, max_requests: 65_536, max_pending_requests: 65_536 }],
          },
          typed_extension_protocol_options: {
            'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
              '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
              explicit_http_config: { http2_protocol_options: {} },
            },
          },
        }
      : {}),
  });
  return {
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: o.adminPort } } },
    static_resources: {
      listeners: [
        {
          name: 'ingress',
          address: { socket_address: { address: '127.0.0.1', port_value: o.listenPort } },
          filter_chains: [
            {
              ...tls,
              filters: [
                {
                  name: 'envoy.filters.network.http_connection_manager',
                  typed_config: {
                    '@type':
                      'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
                    stat_prefix: 'ingress',
                    ...(o.accessLogPath
                      ? {
                          access_log: [
                            {
                              name: 'envoy.access_loggers.file',
                              typed_config: {
                                '@type':
                                  'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog',
                                path: o.accessLogPath,
                                log_format: {
                                  text_format_source: {
                                    inline_string: '%REQ(X-REQUEST-ID)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n',
                                  },
                                },
                              },
                            },
                          ],
                        }
                      : {}),
                    normalize_path: true,
                    merge_slashes: true,
                    route_config: {
                      virtual_hosts: [
                        {
                          name: 'all',
                          domains: ['*'],
                          routes: [
                            ...o.loginCallbackPaths.map((path) => ({
                              match: { path },
                              route: { cluster: 'upstream' },
                              typed_per_filter_config: {
                                'envoy.filters.http.ext_authz': {
                                  '@type':
                                    'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute',
                                  check_settings: {
                                    grpc_service: {
                                      envoy_grpc: { cluster_name: 'nox_authz' },
                                      timeout: `${o.loginTimeoutMs / 1000}s`,
                                      retry_policy: authzRetryPolicy,
                                    },
                                  },
                                },
                              },
                            })),
                            { match: { prefix: '/' }, route: { cluster: 'upstream' } },
                          ],
                        },
                      ],
                    },
                    http_filters: [
                      {
                        name: 'envoy.filters.http.ext_authz',
                        typed_config: {
                          '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz',
                          transport_api_version: 'V3',
                          failure_mode_allow: false,
                          status_on_error: { code: o.statusOnError },
                          include_peer_certificate: true,
                          grpc_service: {
                            envoy_grpc: { cluster_name: 'nox_authz' },
                            timeout: `${o.authzTimeoutMs / 1000}s`,
                            retry_policy: authzRetryPolicy,
                          },
                        },
                      },
                      {
                        name: 'envoy.filters.http.router',
                        typed_config: {
                          '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
                        },
                      },
                    ],
                  },
                },
              ],
            },
          ],
        },
      ],
      clusters: [
        cluster('nox_authz', o.authzHost, [o.authzPort, ...(o.moreAuthzPorts ?? [])], true),
        cluster('upstream', '127.0.0.1', [o.upstreamPort], false),
      ],
    },
  };
}

export async function startEnvoy(opts: EnvoyOptions): Promise<Envoy> {
  const dir = scratchDir('envoy');
  const port = opts.listenPort ?? (await freePort());
  const adminPort = await freePort();
  const config = envoyConfig({
    authzHost: '127.0.0.1',
    authzTimeoutMs: 250,
    statusOnError: 503,
    concurrency: 1,
    loginCallbackPaths: [],
    loginTimeoutMs: 6000,
    ...opts,
    listenPort: port,
    adminPort,
  });
  const configPath = join(dir, 'envoy.json');
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const service = start('envoy', tool('envoy'), [
    '-c',
    configPath,
    '--concurrency',
    String(opts.concurrency ?? 1),
    '--base-id',
    String(port), // several Envoys on one host need distinct shared-memory ids
    '--log-level',
    'warn',
    '--disable-hot-restart',
  ]);
  await waitUntil(
    'envoy /ready',
    async () => (await fetch(`http://127.0.0.1:${adminPort}/ready`)).status === 200,
    30_000,
    service,
  );
  const scheme = opts.tls ? 'https' : 'http';
  return { port, adminPort, url: `${scheme}://127.0.0.1:${port}`, service, stop: () => service.stop() };
}
