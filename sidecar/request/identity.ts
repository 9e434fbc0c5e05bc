/** Who is calling, as the identify stage establishes it; absent for anonymous requests. */
export interface Identity {
  /** Provider-qualified subject, "<provider>:<sub>": users of two providers never collide. */
  readonly subject: string;
  readonly provider: string;
  /** How the caller was identified. */
  readonly method:
    | 'jwt'
    | 'opaque'
    | 'session'
    | 'apiKey'
    | 'serviceAccount'
    | 'clientCertificate'
    | 'header';
  readonly email?: string;
  readonly emailVerified?: boolean;
  readonly clientId?: string;
  readonly groups: readonly string[];
  readonly roles: readonly string[];
  readonly scopes: readonly string[];
  readonly claims: Readonly<Record<string, unknown>>;
}
