import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';

/** What a sealed value is for. Each purpose has its own subkey, so a value sealed for one never opens as another. */
export type Purpose = 'session-tokens' | 'pre-login';

export class KeyError extends Error {
  override readonly name = 'KeyError';
}

/**
 * The Secret value behind `login.encryptionKeySecretRef`: exactly 32 raw bytes, or one or
 * more 32-byte keys written as hex or base64, separated by whitespace or commas, newest
 * first. The first key seals; every key opens, which is how a key is rotated without
 * logging anyone out: prepend the new key, drop the old one after sessionTTL.
 */
export function parseKeys(raw: Buffer): Buffer[] {
  if (raw.length === 32) return [raw];
  const parts = raw
    .toString('utf8')
    .split(/[\s,]+/)
    .filter((p) => p !== '');
  if (parts.length === 0) throw new KeyError('the Secret holds no key');
  return parts.map((p, i) => {
    const key = /^[0-9a-fA-F]{64}$/.test(p) ? Buffer.from(p, 'hex') : Buffer.from(p, 'base64');
    if (key.length !== 32) throw new KeyError(`key ${i + 1} is ${key.length} bytes; AES-256 needs 32`);
    return key;
  });
}

/** A short, non-secret name for a key, stored next to what it sealed. */
export function keyId(key: Buffer): string {
  return createHash('sha256').update('nox key id\0').update(key).digest('base64url').slice(0, 8);
}

/**
 * AES-256-GCM with a random 96-bit IV per value. The sealed form is
 * `<kid>.<iv>.<ciphertext+tag>` in base64url, safe in a cookie and in Redis. The caller's
 * `aad` binds a value to where it belongs (a session, a cookie name): moved elsewhere, it
 * does not open.
 */
export class Keyring {
  readonly currentKid: string;
  readonly #keys = new Map<string, Buffer>();
  readonly #subkeys = new Map<string, Buffer>();

  constructor(keys: readonly Buffer[]) {
    if (keys.length === 0) throw new KeyError('a keyring needs at least one key');
    for (const k of keys) this.#keys.set(keyId(k), k);
    this.currentKid = keyId(keys[0]!);
  }

  seal(purpose: Purpose, plaintext: string, aad: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.#subkey(this.currentKid, purpose), iv);
    c.setAAD(Buffer.from(`${purpose}\0${aad}`));
    const out = Buffer.concat([c.update(plaintext, 'utf8'), c.final(), c.getAuthTag()]);
    return `${this.currentKid}.${iv.toString('base64url')}.${out.toString('base64url')}`;
  }

  /** The plaintext, or undefined when the value is malformed, tampered with, or sealed under a key not in the ring. */
  open(purpose: Purpose, sealed: string, aad: string): string | undefined {
    const [kid, ivText, bodyText, extra] = sealed.split('.');
    if (!kid || !ivText || !bodyText || extra !== undefined || !this.#keys.has(kid)) return undefined;
    const iv = Buffer.from(ivText, 'base64url');
    const body = Buffer.from(bodyText, 'base64url');
    if (iv.length !== 12 || body.length < 16) return undefined;
    try {
      const d = createDecipheriv('aes-256-gcm', this.#subkey(kid, purpose), iv);
      d.setAAD(Buffer.from(`${purpose}\0${aad}`));
      d.setAuthTag(body.subarray(body.length - 16));
      return Buffer.concat([d.update(body.subarray(0, body.length - 16)), d.final()]).toString('utf8');
    } catch {
      return undefined; // GCM tag mismatch: tampered, or the wrong aad
    }
  }

  #subkey(kid: string, purpose: Purpose): Buffer {
    const id = `${kid}/${purpose}`;
    let k = this.#subkeys.get(id);
    if (!k) {
      k = Buffer.from(hkdfSync('sha256', this.#keys.get(kid)!, Buffer.alloc(0), `nox ${purpose}`, 32));
      this.#subkeys.set(id, k);
    }
    return k;
  }
}
