import { afterAll, describe, expect, it } from 'vitest';
import { gemm, type GemmActivation, type GemmVariant } from '../../src/kernels/gemm.js';
import type { Dtype } from '../../src/kernels/types.js';
import { createTestGpu, poisoned, randomArray, roundToDtype, runAndRead, toDevice, type TestGpu } from '../helpers/gpu.js';
import { expectClose } from '../reference/compare.js';
import { refGeluErf, refGeluTanh, refLinear, refTanh } from '../reference/ops-f64.js';

// Created at collection time: tests skip (it.skipIf) on what the adapter lacks.
const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

const TOL: Record<Dtype, number> = { f32: 1e-4, f16: 2e-2 };

async function check(
  dtype: Dtype,
  variant: GemmVariant,
  M: number,
  N: number,
  K: number,
  act: GemmActivation,
  withBias: boolean,
  withResidual: boolean,
  xScale = 1,
): Promise<void> {
  const x = roundToDtype(randomArray(M * K, xScale), dtype);
  const w = roundToDtype(randomArray(N * K, 0.5), dtype);
  const b = roundToDtype(randomArray(N), dtype);
  const r = roundToDtype(randomArray(M * N), dtype);
  let expected = refLinear(x, M, K, w, withBias ? b : null, N);
  if (act === 'gelu') expected = refGeluErf(expected);
  if (act === 'gelu_tanh') expected = refGeluTanh(expected);
  if (act === 'tanh') expected = refTanh(expected);
  if (withResidual) expected = expected.map((v, i) => v + r[i]!);

  const y = poisoned(gpu, M * N, dtype);
  const got = await runAndRead(
    gpu,
    (enc) =>
      gemm(
        enc,
        dtype,
        {
          x: toDevice(gpu, x, dtype),
          w: toDevice(gpu, w, dtype),
          y,
          bias: withBias ? toDevice(gpu, b, dtype) : null,
          residual: withResidual ? toDevice(gpu, r, dtype) : null,
          M,
          N,
          K,
          act,
        },
        'gemm-test',
        variant,
      ),
    y,
    M * N,
    dtype,
  );
  expectClose(got, expected, TOL[dtype], `${variant} ${dtype} ${M}x${N}x${K} ${act}`);
}

describe('gemm Y = act(X·Wᵀ + b) + R matches the float64 reference', () => {
  // Shapes straddle the tile sizes (64x64 tiles, 32x(8·RM) blocks, BK 16, vec4 K).
  const shapes: [number, number, number][] = [
    [1, 1, 4],
    [7, 13, 20],
    [65, 130, 68],
    [129, 67, 132],
    [33, 257, 100],
  ];
  for (const dtype of ['f32', 'f16'] as const) {
    for (const variant of ['naive', 'tiled', 'rb'] as const) {
      it.skipIf(dtype === 'f16' && !gpu.ctx.capabilities.shaderF16)(`${variant} ${dtype}: plain, bias, gelu, gelu_tanh, tanh, residual on ragged shapes`, async () => {
        for (const [M, N, K] of shapes) await check(dtype, variant, M, N, K, 'none', false, false);
        await check(dtype, variant, 70, 45, 36, 'none', true, false);
        await check(dtype, variant, 70, 45, 36, 'gelu', true, false);
        await check(dtype, variant, 70, 45, 36, 'gelu_tanh', true, false);
        await check(dtype, variant, 70, 45, 36, 'tanh', true, false);
        await check(dtype, variant, 70, 45, 36, 'none', true, true);
      });
    }
  }

  it('gelu_tanh saturates to x and 0 without NaN for pre-activations in the hundreds', async () => {
    for (const variant of ['naive', 'tiled', 'rb'] as const) await check('f32', variant, 9, 11, 20, 'gelu_tanh', true, false, 100);
  });

  it('K not divisible by 4 falls back from rb and stays correct', async () => {
    await check('f32', 'rb', 19, 23, 37, 'gelu', true, true);
  });

  it('row strides: reads a column slice of X and writes into a wider Y', async () => {
    const [M, N, K, ldx, ldy] = [9, 10, 12, 20, 16];
    const x = roundToDtype(randomArray(M * ldx), 'f32');
    const w = roundToDtype(randomArray(N * K), 'f32');
    const y = poisoned(gpu, M * ldy);
    const got = await runAndRead(
      gpu,
      (enc) => gemm(enc, 'f32', { x: toDevice(gpu, x), w: toDevice(gpu, w), y, M, N, K, ldx, ldy }, 'strided'),
      y,
      M * ldy,
    );
    const xs = new Float64Array(M * K);
    for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) xs[m * K + k] = x[m * ldx + k]!;
    const expected = refLinear(xs, M, K, w, null, N);
    const written = new Float64Array(M * N);
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) written[m * N + n] = got[m * ldy + n]!;
    expectClose(written, expected, 1e-4, 'strided gemm');
    // Columns past N stay untouched (still poisoned).
    expect(Number.isNaN(got[ldy - 1]!)).toBe(true);
  });
});
