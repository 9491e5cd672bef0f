import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Lavapipe runs shaders on the CPU: GPU tests are slow, and two cores are
    // shared by everything, so files run in a small fork pool.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
