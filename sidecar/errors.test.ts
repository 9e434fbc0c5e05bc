import { describe, expect, it } from 'vitest';
import { allErrorCodes, errorSpec, RpcCode } from './errors.js';

describe('error codes', () => {
  it('maps every code to an HTTP status, an rpc code, a metric label and a doc', () => {
    const rpcCodes = new Set<number>(Object.values(RpcCode));
    for (const code of allErrorCodes) {
      const spec = errorSpec(code);
      expect(spec.httpStatus, code).toBeGreaterThanOrEqual(400);
      expect(spec.httpStatus, code).toBeLessThan(600);
      expect(rpcCodes.has(spec.rpcCode), code).toBe(true);
      expect(spec.rpcCode, `${code} must not map to OK`).not.toBe(RpcCode.OK);
      expect(spec.metricLabel, code).toMatch(/^[a-z][a-z0-9_]*$/);
      expect(spec.doc.length, code).toBeGreaterThan(20);
    }
  });

  it('gives every code a distinct metric label', () => {
    const labels = allErrorCodes.map((c) => errorSpec(c).metricLabel);
    expect(new Set(labels).size).toBe(labels.length);
  });
});
