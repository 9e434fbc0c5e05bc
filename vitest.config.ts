import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{common,sidecar,operator,admin,proto,test}/**/*.test.ts'],
    // Integration suites start real servers; on a 2-core machine two files at a time is
    // what keeps them from starving each other.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 180_000,
    teardownTimeout: 60_000,
    reporters: ['default'],
  },
});
