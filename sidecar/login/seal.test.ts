import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KeyError, Keyring, keyId, parseKeys } from './seal.js';

describe('session sealing (AES-256-GCM)', () => {
  const k1 = randomBytes(32);
  const k2 = randomBytes(32);

  it('opens what it sealed, under the same purpose and aad only', () => {
    const ring = new Keyring([k1]);
    const sealed = ring.seal('session-tokens', '{"access":"a"}', 'hash-1');
    expect(sealed.startsWith(`${keyId(k1)}.`)).toBe(true);
    expect(ring.open('session-tokens', sealed, 'hash-1')).toBe('{"access":"a"}');
    expect(ring.open('session-tokens', sealed, 'hash-2')).toBeUndefined();
    expect(ring.open('pre-login', sealed, 'hash-1')).toBeUndefined();
  });

  it('refuses a tampered value (any flipped bit), a truncated one and garbage', () => {
    const ring = new Keyring([k1]);
    const sealed = ring.seal('pre-login', 'state', 'cookie');
    const [kid, iv, body] = sealed.split('.') as [string, string, string];
    const bytes = Buffer.from(body, 'base64url');
    bytes[0]! ^= 1;
    expect(ring.open('pre-login', `${kid}.${iv}.${bytes.toString('base64url')}`, 'cookie')).toBeUndefined();
    expect(ring.open('pre-login', `${kid}.${iv}.${body.slice(0, 10)}`, 'cookie')).toBeUndefined();
    expect(ring.open('pre-login', 'not.a.sealed.value', 'cookie')).toBeUndefined();
    expect(ring.open('pre-login', '', 'cookie')).toBeUndefined();
  });

  it('rotates: a new key seals, the old one still opens, a removed one no longer does', () => {
    const old = new Keyring([k1]).seal('session-tokens', 'x', 'h');
    const rotated = new Keyring([k2, k1]);
    expect(rotated.open('session-tokens', old, 'h')).toBe('x');
    expect(rotated.seal('session-tokens', 'y', 'h').startsWith(`${keyId(k2)}.`)).toBe(true);
    expect(new Keyring([k2]).open('session-tokens', old, 'h')).toBeUndefined();
  });

  it('reads keys as 32 raw bytes, or hex/base64 text separated by whitespace or commas', () => {
    expect(parseKeys(k1)).toEqual([k1]);
    const text = `${k2.toString('hex')}\n${k1.toString('base64')}, ${k2.toString('base64url')}`;
    expect(parseKeys(Buffer.from(text))).toEqual([k2, k1, k2]);
    expect(() => parseKeys(Buffer.from('short'))).toThrow(KeyError);
    expect(() => parseKeys(Buffer.from('  '))).toThrow(KeyError);
  });
});
