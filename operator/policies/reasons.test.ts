import { describe, expect, it } from 'vitest';
import { allPolicyReasons, policyReasons } from './reasons.js';

describe('policy condition reasons', () => {
  it('are CamelCase, documented, and say which condition and status carry them', () => {
    for (const reason of allPolicyReasons) {
      const spec = policyReasons[reason];
      expect(reason, reason).toMatch(/^[A-Z][A-Za-z0-9]*$/);
      expect(spec.doc.length, reason).toBeGreaterThan(30);
      expect(spec.on.length, reason).toBeGreaterThan(0);
      expect(['True', 'False']).toContain(spec.status);
    }
  });
});
