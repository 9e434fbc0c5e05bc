import type { OAuth2ProviderSpec } from '../../common/resources/types.gen.js';
import type { ResolvedProvider } from '../identity/presets.js';
import type { CookieScope } from '../pipeline/stage.js';
import type { LoginHosts } from './loginHosts.js';

/** An OAuth2Provider with `login.enabled`, with its defaults applied. */
export interface LoginProvider {
  /** "namespace/name" */
  readonly key: string;
  readonly namespace: string;
  readonly spec: OAuth2ProviderSpec;
  readonly resolved: ResolvedProvider;
  readonly callbackPath: string;
  readonly logoutPath: string | undefined;
  readonly postLogoutRedirect: string | undefined;
  readonly sessionTtlMs: number;
  readonly refreshBeforeMs: number;
  readonly cookie: CookieScope;
  /** Where browsers may log in with it (see loginHosts.ts). */
  readonly hosts: LoginHosts;
}
