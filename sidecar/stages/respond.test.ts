import { describe, expect, it } from 'vitest';
import { checkContext, checkInput } from '../../test/harness/checks.js';
import type { RawResource } from '../config/source.js';
import { compileSnapshot } from '../policy/compile.js';
import type { Decision, Outcome } from '../request/outcome.js';
import { clientHeadersToRemove, ownedUpstreamHeaders, stripStage, toCheckResponse } from './respond.js';

const allowed = (allow: Partial<Extract<Decision, { allowed: true }>['allow']>): Decision => ({
  allowed: true,
  decisionId: 'd',
  snapshotVersion: 1,
  allow: { upstreamHeaders: {}, responseHeaders: {}, ...allow },
});

describe('headers the upstream trusts', () => {
  it('removes every x-nox-* name the client sent, whatever it looked like on the wire', () => {
    const out = clientHeadersToRemove(
      { 'x-nox-roles': 'admin', 'X-NoX-Foo': '1', x_nox_tier: 'gold', 'x-noxious': 'kept', accept: '*/*' },
      [],
    );
    expect(out.sort()).toEqual(['x-nox-foo', 'x-nox-roles', 'x_nox_tier']);
  });

  it('removes the host’s identity header names, and their underscore spellings', () => {
    const out = clientHeadersToRemove({ x_user: 'root', 'x-user': 'root', x_other: '1' }, [
      'x-user',
      'x-groups',
    ]);
    expect(out.sort()).toEqual(['x-groups', 'x-user', 'x_user']);
  });

  it('the strip stage takes the names from the snapshot for the request’s host', () => {
    const resources = [
      {
        apiVersion: 'nox.dev/v1alpha1',
        kind: 'AccessPolicy',
        metadata: { name: 'p', namespace: 'ns' },
        spec: { match: { hosts: ['app.test'] }, defaultAction: 'Allow', identityHeaders: { user: 'x-user' } },
        origin: 't',
      } as RawResource,
    ];
    const snapshot = compileSnapshot({ resources, problems: [] }, undefined, 1);
    const run = (host: string) =>
      stripStage.run(
        checkInput({ host, headers: { 'x-nox-a': '1' } }),
        checkContext({ snapshot }),
      ) as Outcome;
    const app = run('app.test:443');
    expect(app.kind === 'continue' && app.removeUpstreamHeaders).toEqual(
      expect.arrayContaining(['x-user', 'x-nox-a']),
    );
    const other = run('other.test');
    expect(other.kind === 'continue' && other.removeUpstreamHeaders).toEqual(['x-nox-a']);
  });

  it('sets what Nox sets, removes the rest, and never removes a header it sets', () => {
    const r = toCheckResponse(
      allowed({
        upstreamHeaders: { 'x-nox-user': 'corp:a' },
        removeHeaders: ['X-User', 'x-nox-user', 'x-nox-roles'],
      }),
    );
    expect(r.okResponse!.headers!.map((h) => [h.header!.key, h.header!.value])).toEqual([
      ['x-nox-user', 'corp:a'],
    ]);
    const removed = r.okResponse!.headersToRemove!;
    expect(removed).toEqual(expect.arrayContaining(['x-user', 'x-nox-roles', 'x-nox-email']));
    expect(removed).not.toContain('x-nox-user');
    expect(new Set(removed).size).toBe(removed.length);
    expect(removed.length).toBe(ownedUpstreamHeaders.length + 1);
  });

  it('never sets a value with a control character: it is removed instead', () => {
    const r = toCheckResponse(
      allowed({ upstreamHeaders: { 'x-nox-tier': 'gold\r\nx-nox-roles: admin', ok: '1' } }),
    );
    expect(r.okResponse!.headers!.map((h) => h.header!.key)).toEqual(['ok']);
    expect(r.okResponse!.headersToRemove).toContain('x-nox-tier');
  });
});
