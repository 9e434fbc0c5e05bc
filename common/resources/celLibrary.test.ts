import { describe, expect, it } from 'vitest';
import { kinds } from './kinds/index.js';
import type { CelRule, Schema } from './schema.js';
import { timeZones } from './timeZones.js';
import { evaluateRule, isCidr } from './validate.js';

// validate.ts evaluates the CRDs' CEL rules for files with stand-ins for the API server's
// libraries (CIDR, quantity, strings). These tests pin the stand-ins to the API server's
// behaviour on the values that matter; test/integration/crd-*.test.ts compare both on a real
// API server.

function rulesOf(s: Schema | undefined, out: CelRule[] = []): CelRule[] {
  if (!s) return out;
  out.push(...(s['x-kubernetes-validations'] ?? []));
  for (const p of Object.values(s.properties ?? {})) rulesOf(p, out);
  rulesOf(s.items, out);
  rulesOf(s.additionalProperties, out);
  for (const a of s.anyOf ?? []) rulesOf(a, out);
  return out;
}

describe('CEL rules of the kinds, evaluated for files', () => {
  it('every rule calls only functions validate.ts provides (std, strings, CIDR, quantity)', () => {
    const known = new Set(
      'has all exists exists_one filter map size type int string duration matches contains startsWith endsWith substring lowerAscii isCIDR isQuantity quantity isGreaterThan isLessThan compareTo'.split(
        ' ',
      ),
    );
    for (const def of kinds) {
      for (const r of [...rulesOf(def.spec), ...(def.rules ?? [])]) {
        const code = r.rule.replace(/'(?:[^'\\\\]|\\\\.)*'/g, "''"); // string literals out
        for (const [, name] of code.matchAll(/([A-Za-z_][A-Za-z0-9_]*)\s*\(/g))
          expect(known.has(name!), `${def.kind}: ${name} in ${r.rule}`).toBe(true);
        const parsed = evaluateRule(r.rule, new Map()) as { message?: string };
        expect(String(parsed?.message ?? ''), r.rule).not.toMatch(/parse|syntax/i);
      }
    }
  });

  it('isCIDR: what netip.ParsePrefix accepts, without zones or IPv4-mapped IPv6', () => {
    for (const c of [
      '10.0.0.0/8',
      '10.0.0.1/8',
      '0.0.0.0/0',
      '::/0',
      '2001:db8::/32',
      '::1/128',
      'fe80::/10',
    ])
      expect(isCidr(c), c).toBe(true);
    for (const c of [
      '300.1.1.0/24',
      '10.0.0.0/33',
      '10.0.0.0/08',
      '01.2.3.4/8',
      '::/129',
      '2001:db8:::1/64',
      '::ffff:10.0.0.0/104',
      '::ffff:a00:0/104',
      'fe80::1%eth0/64',
      '10.0.0.0',
      '10.0.0.0/',
    ])
      expect(isCidr(c), c).toBe(false);
  });

  it('quantity: sign and compareTo over decimal and binary suffixes', () => {
    const q = (rule: string, self: string) => evaluateRule(rule, self);
    expect(q("quantity(self).compareTo(quantity('1Gi')) == 0", '1024Mi')).toBe(true);
    expect(q("quantity(self).compareTo(quantity('1G')) < 0", '953Mi')).toBe(true);
    expect(q("quantity(self).compareTo(quantity('1')) == 0", '1000m')).toBe(true);
    expect(q("quantity(self).compareTo(quantity('0.5')) == 0", '500m')).toBe(true);
    expect(q("quantity(self).compareTo(quantity('1n')) > 0", '0.000000002')).toBe(true);
    expect(q("quantity(self).isGreaterThan(quantity('0'))", '0Gi')).toBe(false);
    expect(q("quantity(self).isGreaterThan(quantity('0'))", '.5')).toBe(true);
    expect(q("quantity(self).isLessThan(quantity('1Ki'))", '1000')).toBe(true);
  });

  it('every time zone of timeZones.ts is one this Node can evaluate', () => {
    expect(timeZones.length).toBeGreaterThan(500);
    for (const tz of timeZones)
      expect(() => new Intl.DateTimeFormat('en', { timeZone: tz }), tz).not.toThrow();
    expect(timeZones).toContain('UTC');
    expect(timeZones).toContain('Asia/Kolkata');
    expect(timeZones).toContain('Asia/Calcutta');
  });
});
