import { BatchEncoder, EncoderResources } from '../../src/gpu/batch-encoder.js';
import { uploadStorage } from '../../src/gpu/buffers.js';
import { GpuContext } from '../../src/gpu/context.js';
import type { Dtype } from '../../src/kernels/types.js';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/util/f16.js';
import { silentLogger } from '../../src/util/logger.js';

export interface TestGpu {
  ctx: GpuContext;
  res: EncoderResources;
  destroy(): void;
}

/** One device per test file (destroy it in afterAll). */
export async function createTestGpu(): Promise<TestGpu> {
  const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'] }, silentLogger);
  const res = new EncoderResources(ctx);
  return {
    ctx,
    res,
    destroy: () => {
      res.destroy();
      ctx.destroy();
    },
  };
}

export function toDevice(gpu: TestGpu, data: Float32Array | Float64Array | number[], dtype: Dtype = 'f32'): GPUBuffer {
  const f32 = data instanceof Float32Array ? data : Float32Array.from(data);
  return uploadStorage(gpu.ctx.device, dtype === 'f16' ? f32ArrayToF16(f32) : f32, 'test-input');
}

export function u32ToDevice(gpu: TestGpu, data: number[] | Uint32Array): GPUBuffer {
  return uploadStorage(gpu.ctx.device, Uint32Array.from(data), 'test-u32');
}

/** An output buffer pre-filled with NaN so unwritten elements are caught. */
export function poisoned(gpu: TestGpu, elements: number, dtype: Dtype = 'f32'): GPUBuffer {
  const nan = new Float32Array(elements).fill(Number.NaN);
  return toDevice(gpu, nan, dtype);
}

export function encoder(gpu: TestGpu, profile = false): BatchEncoder {
  return new BatchEncoder(gpu.res, { profile });
}

/** Run `record`, read `elements` of `out` back as f32. */
export async function runAndRead(
  gpu: TestGpu,
  record: (enc: BatchEncoder) => void,
  out: GPUBuffer,
  elements: number,
  dtype: Dtype = 'f32',
): Promise<Float32Array> {
  const enc = encoder(gpu);
  record(enc);
  const bytes = elements * (dtype === 'f16' ? 2 : 4);
  enc.readback(out, 0, bytes);
  const { readbacks } = await enc.submit();
  const raw = readbacks[0]!;
  return dtype === 'f16' ? f16ArrayToF32(new Uint16Array(raw, 0, elements)) : new Float32Array(raw, 0, elements);
}

/** Fresh random values (Math.random: every run checks new inputs). */
export function randomArray(n: number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = (Math.random() * 2 - 1) * scale;
  return a;
}

/** Round through f16 so a reference sees the same inputs the f16 kernel sees. */
export function roundToDtype(a: Float64Array, dtype: Dtype): Float64Array {
  if (dtype === 'f32') return Float64Array.from(Float32Array.from(a));
  return Float64Array.from(f16ArrayToF32(f32ArrayToF16(Float32Array.from(a))));
}
