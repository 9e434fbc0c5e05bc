import { describe, expect, it } from 'vitest';
import { allErrorCodes, errorSpec, RpcCode } from './errors.js';

describe('error codes', () => {
  it('maps every code to an HTTP status, an rpc code, a metric label and a doc', () => {
    const rpcCodes = new Set<number>(Object.values(RpcCode));
    for (const code of allErrorCodes) {
      const spec = errorSpec(code);
      // 200 and 302 are Nox's own login pages and redirects; everything else is an error status.
      const ownAnswer = spec.httpStatus === 200 || spec.httpStatus === 302;
      expect(ownAnswer || (spec.httpStatus >= 400 && spec.httpStatus < 600), code).toBe(true);
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
