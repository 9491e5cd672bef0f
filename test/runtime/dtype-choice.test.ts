import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { chooseDtype, maxAbsWeight } from '../../src/runtime/dtype-choice.js';
import { silentLogger } from '../../src/util/logger.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';

const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());
const SHAPE = { M: 32, N: 48, K: 40 };

describe("model.dtype 'auto'", () => {
  it('an explicit dtype is taken as given, without a probe', async () => {
    expect((await chooseDtype(gpu.ctx, 'f32', {}, SHAPE, silentLogger)).dtype).toBe('f32');
  });

  it('finds the largest weight anywhere in a nested checkpoint (NaN counts as out of range)', () => {
    const w = { a: new Float32Array([1, -3]), layers: [{ b: new Float32Array([2]) }, { c: { d: new Float32Array([-7.5]) } }], m: new Map([['x', new Float32Array([4])]]) };
    expect(maxAbsWeight(w)).toBe(7.5);
    expect(maxAbsWeight({ a: new Float32Array([1, Number.NaN]) })).toBe(Infinity);
  });

  it.skipIf(!gpu.ctx.capabilities.shaderF16)('keeps f32 for weights beyond f16 range, whatever the probe would say', async () => {
    const d = await chooseDtype(gpu.ctx, 'auto', { w: new Float32Array([1, 70000]) }, SHAPE, silentLogger);
    expect(d).toEqual({ dtype: 'f32', reason: expect.stringMatching(/does not fit f16/) });
  });

  it.skipIf(!gpu.ctx.capabilities.shaderF16)('probes f16 vs f32 once, states the timings, and the next start reads the verdict', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'petserve-dtype-'));
    try {
      const first = await chooseDtype(gpu.ctx, 'auto', { w: new Float32Array([0.5]) }, SHAPE, silentLogger, dir);
      expect(['f16', 'f32']).toContain(first.dtype);
      expect(first.reason).toMatch(/f32 [\d.]+ ms, f16 [\d.]+ ms/);
      const again = await chooseDtype(gpu.ctx, 'auto', { w: new Float32Array([0.5]) }, SHAPE, silentLogger, dir);
      expect(again).toEqual(first);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(gpu.ctx.capabilities.shaderF16)('without shader-f16 auto is f32', async () => {
    expect((await chooseDtype(gpu.ctx, 'auto', {}, SHAPE, silentLogger)).dtype).toBe('f32');
  });
});
