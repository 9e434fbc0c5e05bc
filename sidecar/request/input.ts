/** What the decision is computed from: the parts of Envoy's CheckRequest Nox reads, normalized. */
export interface CheckInput {
  readonly method: string;
  readonly host: string;
  /** Normalized path (dot segments resolved, duplicate slashes merged), no query. */
  readonly path: string;
  readonly query: string;
  readonly scheme: string;
  readonly protocol: string;
  /** Lower-case header names, as Envoy sends them. */
  readonly headers: Readonly<Record<string, string>>;
  readonly sourceAddress: string;
  readonly requestId: string;
  /** URL-encoded PEM of the downstream client certificate (Envoy's include_peer_certificate), if any. */
  readonly peerCertificate?: string;
}
