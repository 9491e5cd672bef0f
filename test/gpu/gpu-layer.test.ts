import { afterAll, describe, expect, it } from 'vitest';
import { BatchEncoder } from '../../src/gpu/batch-encoder.js';
import { ActivationArena } from '../../src/gpu/buffers.js';
import { dawnInstance, GpuContext } from '../../src/gpu/context.js';
import { PipelineCache } from '../../src/gpu/pipeline-cache.js';
import { renderShader } from '../../src/gpu/shader-template.js';
import { gemm, gemmSpec } from '../../src/kernels/gemm.js';
import { GpuUnavailableError, ShaderError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { createTestGpu, poisoned, randomArray, toDevice, type TestGpu } from '../helpers/gpu.js';

// Created at collection time: tests skip (it.skipIf) on what the adapter lacks.
const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

describe('GPU context', () => {
  it('reports the granted features and the adapter limits it asked for', () => {
    const caps = gpu.ctx.capabilities;
    expect(caps.adapterName.length).toBeGreaterThan(0);
    expect(caps.shaderF16).toBe(gpu.ctx.device.features.has('shader-f16'));
    expect(caps.timestampQuery).toBe(gpu.ctx.device.features.has('timestamp-query'));
    // The default limit is 128 MiB; we must have asked for at least that.
    expect(caps.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 1024 * 1024);
  });

  it('an adapter filter that matches nothing fails with a message saying what to install', async () => {
    const err = await GpuContext.create({ adapter: 'no-such-gpu-xyz' }, silentLogger).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GpuUnavailableError);
    expect(String(err)).toMatch(/no-such-gpu-xyz/);
    expect(String(err)).toMatch(/setup-system\.sh/);
  });
});

describe('shader templates', () => {
  it('specialises params, #if/#else and includes', () => {
    const f16 = renderShader('gemm_naive', { DTYPE: 'f16', HAS_BIAS: true, ACT: 'gelu', RESIDUAL: false, TASKS: false });
    expect(f16).toMatch(/enable f16;/);
    expect(f16).toMatch(/alias T = f16;/);
    expect(f16).toMatch(/fn gelu_erf/);
    expect(f16).toMatch(/var<storage, read> bias/);
    expect(f16).not.toMatch(/var<storage, read> res/);
    const f32 = renderShader('gemm_naive', { DTYPE: 'f32', HAS_BIAS: false, ACT: 'none', RESIDUAL: true, TASKS: false });
    expect(f32).not.toMatch(/enable f16/);
    expect(f32).not.toMatch(/var<storage, read> bias/);
    expect(f32).toMatch(/var<storage, read> res/);
  });

  it('refuses missing, unknown and out-of-range params', () => {
    expect(() => renderShader('gemm_naive', { DTYPE: 'f32', HAS_BIAS: true, ACT: 'none', TASKS: false })).toThrow(/missing param RESIDUAL/);
    expect(() =>
      renderShader('gemm_naive', { DTYPE: 'f32', HAS_BIAS: true, ACT: 'none', RESIDUAL: false, TASKS: false, EXTRA: 1 }),
    ).toThrow(/unknown param EXTRA/);
    expect(() => renderShader('gemm_naive', { DTYPE: 'f64', HAS_BIAS: true, ACT: 'none', RESIDUAL: false, TASKS: false })).toThrow(
      /DTYPE=f64 not one of/,
    );
    expect(() => renderShader('no_such_shader', {})).toThrow(ShaderError);
  });
});

describe('pipeline cache and memory reuse', () => {
  it('compiles each specialisation once', async () => {
    const spec = { shader: 'softmax', params: { DTYPE: 'f32', WG: 64 } };
    const a = await gpu.ctx.pipelines.prepare(spec);
    const size = gpu.ctx.pipelines.size;
    expect(await gpu.ctx.pipelines.prepare({ shader: 'softmax', params: { WG: 64, DTYPE: 'f32' } })).toBe(a);
    expect(gpu.ctx.pipelines.get(spec)).toBe(a);
    expect(gpu.ctx.pipelines.size).toBe(size);
  });

  it('a specialisation that does not compile is a ShaderError with the compiler message', async () => {
    // WG must be a power of two >= 1 for the reduction; 0 gives an invalid workgroup size.
    await expect(gpu.ctx.pipelines.prepare({ shader: 'softmax', params: { DTYPE: 'f32', WG: 0 } })).rejects.toThrow(ShaderError);
  });

  it('a subgroup kernel on a device without the subgroups feature is a ShaderError naming the feature', async () => {
    // The process's Dawn instance (no throwaway instance: see dawnInstance), a device of its own.
    const adapter = await dawnInstance([]).requestAdapter();
    // No required features: the device has no subgroups whatever the adapter offers.
    const device = await adapter!.requestDevice();
    try {
      expect(device.features.has('subgroups')).toBe(false);
      const spec = gemmSpec('f32', { variant: 'subgroup', rowsPerWorkgroup: 1 }, { hasBias: false, act: 'none', residual: false });
      expect(() => new PipelineCache(device, false).get(spec)).toThrow(/needs the subgroups feature/);
    } finally {
      device.destroy();
    }
  });

  it('the activation arena reuses buffers and only grows', () => {
    const arena = new ActivationArena(gpu.ctx.device);
    const a = arena.get('hidden', 1000);
    expect(arena.get('hidden', 500)).toBe(a);
    const b = arena.get('hidden', 100_000);
    expect(b).not.toBe(a);
    expect(b.size).toBeGreaterThanOrEqual(100_000);
    expect(arena.bytes).toBe(b.size);
    arena.destroy();
    expect(arena.bytes).toBe(0);
  });
});

describe('batch encoder', () => {
  it.skipIf(!gpu.ctx.capabilities.timestampQuery)('profiles phases with timestamp queries when asked', async () => {
    const [M, N, K] = [64, 64, 64];
    const x = toDevice(gpu, randomArray(M * K));
    const w = toDevice(gpu, randomArray(N * K));
    const y = poisoned(gpu, M * N);
    const enc = new BatchEncoder(gpu.res, { profile: true });
    enc.phase('first');
    gemm(enc, 'f32', { x, w, y, M, N, K });
    enc.phase('second');
    gemm(enc, 'f32', { x, w, y, M, N, K });
    gemm(enc, 'f32', { x, w, y, M, N, K });
    const { phases } = await enc.submit();
    expect(phases?.map((p) => p.name)).toEqual(['first', 'second']);
    for (const p of phases ?? []) expect(p.ms).toBeGreaterThan(0);
  });

  it('rejects a dispatch beyond the per-dimension workgroup limit', () => {
    const enc = new BatchEncoder(gpu.res);
    const buf = poisoned(gpu, 4);
    expect(() =>
      gemm(enc, 'f32', { x: buf, w: buf, y: buf, M: 64 * 70_000, N: 1, K: 4 }, 'huge', { variant: 'tiled', bk: 16 }),
    ).toThrow(/exceeds 65535 workgroups/);
  });
});
