import { describe, expect, it } from 'vitest';
import type { Identity } from './identity.js';
import { identityHeaders, joinList, maxIdentityHeaderBytes, safeHeaderValue } from './identityHeaders.js';

const names = {
  user: 'X-Nox-User',
  provider: 'x-nox-provider',
  email: 'x-nox-email',
  groups: 'x-nox-groups',
  claims: { 'x-dept': 'dept', 'x-tags': 'tags', 'x-org': 'org.name', 'x-meta': 'meta' },
};

const identity = (fields: Partial<Identity> = {}): Identity => ({
  subject: 'corp:alice',
  provider: 'corp',
  method: 'jwt',
  email: 'alice@example.com',
  emailVerified: true,
  groups: ['dev', 'ops'],
  roles: [],
  scopes: [],
  claims: {},
  ...fields,
});

describe('identity header values', () => {
  it('passes the identity under the policy’s names, lower-case', () => {
    expect(identityHeaders(identity({ claims: { dept: 'eng', org: { name: 'acme' } } }), names)).toEqual({
      'x-nox-user': 'corp:alice',
      'x-nox-provider': 'corp',
      'x-nox-email': 'alice@example.com',
      'x-nox-groups': 'dev,ops',
      'x-dept': 'eng',
      'x-org': 'acme',
    });
  });

  it('sends the email only when the provider says it is verified', () => {
    expect(identityHeaders(identity({ emailVerified: false }), names)).not.toHaveProperty('x-nox-email');
    const { emailVerified: _, ...unknown } = identity();
    expect(identityHeaders(unknown, names)).not.toHaveProperty('x-nox-email');
  });

  it('never sends a value with a control character: the header is left out, not repaired', () => {
    for (const bad of [
      'a\r\nx-nox-roles: admin',
      'ad\u0000min',
      'a\nb',
      'tab\there',
      'del\u007f',
      'c1\u0085',
    ]) {
      const h = identityHeaders(identity({ subject: `corp:${bad}`, claims: { dept: bad } }), names);
      expect(h, JSON.stringify(bad)).not.toHaveProperty('x-nox-user');
      expect(h, JSON.stringify(bad)).not.toHaveProperty('x-dept');
      expect(h['x-nox-provider']).toBe('corp');
    }
  });

  it('never sends a value HTTP parsers would trim into another one, or an empty one', () => {
    const h = identityHeaders(
      identity({ subject: 'corp:alice ', claims: { dept: ' eng', tags: '' } }),
      names,
    );
    expect(h).not.toHaveProperty('x-nox-user');
    expect(h).not.toHaveProperty('x-dept');
    expect(h).not.toHaveProperty('x-tags');
  });

  it('bounds a value’s length: over the bound it is not sent (never cut short)', () => {
    const at = 'x'.repeat(maxIdentityHeaderBytes);
    expect(safeHeaderValue(at)).toBe(true);
    expect(safeHeaderValue(`${at}x`)).toBe(false);
    // Bytes, not UTF-16 units.
    expect(safeHeaderValue('é'.repeat(maxIdentityHeaderBytes / 2 + 1))).toBe(false);
    expect(identityHeaders(identity({ claims: { dept: `${at}x` } }), names)).not.toHaveProperty('x-dept');
  });

  it('leaves out a group whose name holds the separator, so it cannot read as two groups', () => {
    const h = identityHeaders(identity({ groups: ['dev', 'ops,admin', 'a\nadmin', ' admin', 'qa'] }), names);
    expect(h['x-nox-groups']).toBe('dev,qa');
    expect(identityHeaders(identity({ groups: ['x,admin'] }), names)).not.toHaveProperty('x-nox-groups');
    expect(identityHeaders(identity({ groups: [] }), names)).not.toHaveProperty('x-nox-groups');
  });

  it('joins a list claim by the same rule; other objects go as JSON, whose escapes keep control characters out', () => {
    const h = identityHeaders(
      identity({ claims: { tags: ['a', 'b,c', 3, true, 'd\r\n'], meta: { note: 'x\r\ny' } } }),
      names,
    );
    expect(h['x-tags']).toBe('a,3,true');
    expect(h['x-meta']).toBe('{"note":"x\\r\\ny"}');
    expect(joinList([{ a: 1 }, null])).toBeUndefined();
  });

  it('bounds the joined list as a whole', () => {
    const groups = Array.from({ length: 1000 }, (_, i) => `group-${i}`);
    expect(identityHeaders(identity({ groups }), names)).not.toHaveProperty('x-nox-groups');
  });
});
