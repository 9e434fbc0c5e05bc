import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratchDir } from './process.js';

/**
 * The manifests tests give the sidecar, as the YAML a user would write. YAML is a superset
 * of JSON, so spec objects are written as JSON flow mappings.
 */

/**
 * An OIDC OAuth2Provider `corp` (client `gw`, one audience, RS256 only, plus `provider`'s
 * fields) and an AccessPolicy `api` that lets any caller signed in through it pass.
 */
export function signedInPolicy(
  issuer: string,
  audience: string,
  provider: Record<string, unknown> = {},
): string {
  const spec = {
    type: 'oidc',
    issuer,
    clientId: 'gw',
    audiences: [audience],
    allowedAlgorithms: ['RS256'],
    ...provider,
  };
  return `apiVersion: nox.dev/v1alpha1
kind: OAuth2Provider
metadata: { name: corp }
spec: ${JSON.stringify(spec)}
---
apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api }
spec:
  providers: [corp]
  rules: [{ name: signed-in, action: Allow, when: { authenticated: Authenticated } }]
`;
}

/** An AccessPolicy `open` that allows every request on every host (anonymous callers too). */
export const openPolicy = `apiVersion: nox.dev/v1alpha1
kind: AccessPolicy
metadata: { name: open }
spec: { defaultAction: Allow }
`;

/** A fresh directory holding `yaml` as p.yaml: the sidecar's policy path. */
export function policyDir(prefix: string, yaml: string): string {
  const dir = scratchDir(prefix);
  writeFileSync(join(dir, 'p.yaml'), yaml);
  return dir;
}

/** A Secret as the sidecar's files source reads it (NOX_SECRETS_DIR): <dir>/<namespace>/<name>/<key>. */
export function writeSecret(
  dir: string,
  namespace: string,
  name: string,
  data: Record<string, string>,
): void {
  const secretDir = join(dir, namespace, name);
  mkdirSync(secretDir, { recursive: true });
  for (const [key, value] of Object.entries(data)) writeFileSync(join(secretDir, key), value);
}
