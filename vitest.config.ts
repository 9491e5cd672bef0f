import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Lavapipe runs shaders on the CPU: GPU tests are slow, and two cores are
    // shared by everything, so files run in a small fork pool.
    pool: 'forks',
    maxWorkers: 2,
    // In-process CLI runs and the servers/workers tests spawn (they inherit it) read PETSERVE_*: f32
    // storage, since tests compare with float64 references at f32 tolerances and model.dtype 'auto' lets a
    // start-up probe pick f16; no background kernel tuning beside the tests on two cores (the tests of
    // 'auto' and of the tuner set what they test).
    env: { PETSERVE_DTYPE: 'f32', PETSERVE_KERNELS_AUTOTUNE: 'false' },
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
