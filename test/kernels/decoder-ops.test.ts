import { afterAll, describe, expect, it } from 'vitest';
import { rmsNorm, rotaryEmbedding, siluMul } from '../../src/kernels/decoder-ops.js';
import type { Dtype } from '../../src/kernels/types.js';
import {
  createTestGpu,
  poisoned,
  randomArray,
  roundToDtype,
  runAndRead,
  toDevice,
  u32ToDevice,
  type TestGpu,
} from '../helpers/gpu.js';
import { expectClose } from '../reference/compare.js';
import { refRmsNorm, refRope, refSiluMul } from '../reference/ops-f64.js';

// Created at collection time: tests skip (it.skipIf) on what the adapter lacks.
const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

const TOL: Record<Dtype, number> = { f32: 1e-4, f16: 2e-2 };
const dtypes = ['f32', 'f16'] as const;
const noF16 = (dtype: Dtype): boolean => dtype === 'f16' && !gpu.ctx.capabilities.shaderF16;

/** Columns [col, col + width) of each row of a [rows, ld] matrix. */
function columns(m: ArrayLike<number>, rows: number, ld: number, col: number, width: number): Float64Array {
  const out = new Float64Array(rows * width);
  for (let r = 0; r < rows; r++) for (let c = 0; c < width; c++) out[r * width + c] = m[r * ld + col + c]!;
  return out;
}

/** HF's default inverse frequencies base^(−2i/rotaryDims), as the f32 the host uploads. */
function invFrequencies(rotaryDims: number, base = 10000): Float64Array {
  return Float64Array.from({ length: rotaryDims / 2 }, (_, i) => Math.fround(base ** ((-2 * i) / rotaryDims)));
}

describe('rmsNorm matches the float64 reference', () => {
  for (const dtype of dtypes) {
    it.skipIf(noF16(dtype))(`${dtype}: dims not multiples of the workgroup, offset inputs`, async () => {
      for (const [rows, dim] of [
        [1, 1],
        [3, 63],
        [37, 130],
        [5, 770],
      ] as const) {
        // An offset mean checks that nothing is subtracted (RMSNorm is not LayerNorm).
        const x = roundToDtype(randomArray(rows * dim).map((v) => v + 2), dtype);
        const gamma = roundToDtype(randomArray(dim).map((v) => 1 + 0.3 * v), dtype);
        const eps = 1e-6;
        const y = poisoned(gpu, rows * dim, dtype);
        const got = await runAndRead(
          gpu,
          (enc) => rmsNorm(enc, dtype, { x: toDevice(gpu, x, dtype), gamma: toDevice(gpu, gamma, dtype), y, rows, dim, eps }),
          y,
          rows * dim,
          dtype,
        );
        expectClose(got, refRmsNorm(x, rows, dim, gamma, eps), TOL[dtype], `rms_norm ${rows}x${dim}`);
      }
    });
  }

  it('eps dominates for an all-zero row instead of dividing by zero', async () => {
    const dim = 7;
    const y = poisoned(gpu, dim);
    const gamma = randomArray(dim);
    const got = await runAndRead(
      gpu,
      (enc) => rmsNorm(enc, 'f32', { x: toDevice(gpu, new Float64Array(dim)), gamma: toDevice(gpu, gamma), y, rows: 1, dim, eps: 1e-5 }),
      y,
      dim,
    );
    expectClose(got, new Float64Array(dim), 0, 'rms_norm zero row');
  });
});

describe('rotaryEmbedding rotates q and k in place like HF rotate_half', () => {
  const cases = [
    // tokens, numHeads, numKvHeads, headDim, rotaryDims, max position
    [1, 1, 1, 4, 4, 10],
    [3, 4, 2, 5, 4, 300],
    [37, 3, 1, 12, 12, 4096],
    [5, 2, 2, 80, 32, 40000],
    [4, 4, 1, 100, 100, 2000],
  ] as const;
  for (const dtype of dtypes) {
    it.skipIf(noF16(dtype))(`${dtype}: partial rotary, GQA, long positions; v block and row padding untouched`, async () => {
      for (const [tokens, numHeads, numKvHeads, headDim, rotaryDims, maxPosition] of cases) {
        const qWidth = numHeads * headDim;
        const kvWidth = numKvHeads * headDim;
        const ldQkv = qWidth + 2 * kvWidth + 3;
        const qkv = roundToDtype(randomArray(tokens * ldQkv), dtype);
        const positions = Array.from({ length: tokens }, () => Math.floor(Math.random() * (maxPosition + 1)));
        positions[0] = maxPosition;
        const invFreq = invFrequencies(rotaryDims);
        const buffer = toDevice(gpu, qkv, dtype);
        const got = await runAndRead(
          gpu,
          (enc) =>
            rotaryEmbedding(enc, dtype, {
              qkv: buffer,
              ldQkv,
              positions: u32ToDevice(gpu, positions),
              invFreq: toDevice(gpu, invFreq),
              tokens,
              numHeads,
              numKvHeads,
              headDim,
              rotaryDims,
            }),
          buffer,
          tokens * ldQkv,
          dtype,
        );
        const label = `rope ${tokens}x(${numHeads}+${numKvHeads})x${headDim} rotary ${rotaryDims}`;
        const q = columns(qkv, tokens, ldQkv, 0, qWidth);
        const k = columns(qkv, tokens, ldQkv, qWidth, kvWidth);
        const tol = TOL[dtype];
        expectClose(columns(got, tokens, ldQkv, 0, qWidth), refRope(q, tokens, numHeads, headDim, rotaryDims, positions, invFreq), tol, `${label} q`);
        expectClose(columns(got, tokens, ldQkv, qWidth, kvWidth), refRope(k, tokens, numKvHeads, headDim, rotaryDims, positions, invFreq), tol, `${label} k`);
        const rest = ldQkv - qWidth - kvWidth;
        expectClose(columns(got, tokens, ldQkv, qWidth + kvWidth, rest), columns(qkv, tokens, ldQkv, qWidth + kvWidth, rest), 0, `${label} v`);
      }
    });
  }

  it('rejects an odd or oversized rotaryDims', () => {
    const dummy = toDevice(gpu, [0, 0, 0, 0]);
    const args = { qkv: dummy, ldQkv: 4, positions: dummy, invFreq: dummy, tokens: 1, numHeads: 1, numKvHeads: 1, headDim: 2 };
    const enc = { dispatch: () => undefined } as never;
    expect(() => rotaryEmbedding(enc, 'f32', { ...args, rotaryDims: 3 })).toThrow(RangeError);
    expect(() => rotaryEmbedding(enc, 'f32', { ...args, rotaryDims: 4 })).toThrow(RangeError);
  });
});

describe('siluMul (SwiGLU) matches the float64 reference', () => {
  for (const dtype of dtypes) {
    it.skipIf(noF16(dtype))(`${dtype}: ragged widths, gates large enough to overflow a naive sigmoid`, async () => {
      const big = dtype === 'f16' ? 6e4 : 1e6;
      for (const [rows, width] of [
        [1, 1],
        [3, 63],
        [37, 130],
      ] as const) {
        const x = randomArray(rows * 2 * width, 8);
        // Gates far past exp's f32 range (|g| > 89) at both signs, with small ups.
        for (let r = 0; r < rows; r++) {
          x[r * 2 * width] = r % 2 === 0 ? big : -big;
          x[r * 2 * width + width] = 1e-3;
        }
        const xr = roundToDtype(x, dtype);
        const y = poisoned(gpu, rows * width, dtype);
        const got = await runAndRead(
          gpu,
          (enc) => siluMul(enc, dtype, { x: toDevice(gpu, xr, dtype), y, rows, width }),
          y,
          rows * width,
          dtype,
        );
        expectClose(got, refSiluMul(xr, rows, width), TOL[dtype], `silu_mul ${rows}x${width}`);
      }
    });
  }
});

describe('decoder row kernels dispatch more than 65535 rows', () => {
  it('rmsNorm, rotaryEmbedding and siluMul reach the last row', async () => {
    const rows = 65535 + 7;
    const x = randomArray(rows * 2);
    const gamma = randomArray(2);
    const y = poisoned(gpu, rows * 2);
    const normed = await runAndRead(
      gpu,
      (enc) => rmsNorm(enc, 'f32', { x: toDevice(gpu, x), gamma: toDevice(gpu, gamma), y, rows, dim: 2, eps: 1e-6 }),
      y,
      rows * 2,
    );
    expectClose(normed, refRmsNorm(x, rows, 2, gamma, 1e-6), TOL.f32, 'rms_norm many rows');

    const gated = poisoned(gpu, rows);
    const swiglu = await runAndRead(gpu, (enc) => siluMul(enc, 'f32', { x: toDevice(gpu, x), y: gated, rows, width: 1 }), gated, rows);
    expectClose(swiglu, refSiluMul(x, rows, 1), TOL.f32, 'silu_mul many rows');

    // One q head and one k head of two dims: x itself is the [rows, 4] qkv.
    const qkv = randomArray(rows * 4);
    const positions = Array.from({ length: rows }, (_, r) => r % 1000);
    const invFreq = invFrequencies(2);
    const buffer = toDevice(gpu, qkv);
    const rotated = await runAndRead(
      gpu,
      (enc) =>
        rotaryEmbedding(enc, 'f32', {
          qkv: buffer,
          ldQkv: 4,
          positions: u32ToDevice(gpu, positions),
          invFreq: toDevice(gpu, invFreq),
          tokens: rows,
          numHeads: 1,
          numKvHeads: 1,
          headDim: 2,
          rotaryDims: 2,
        }),
      buffer,
      rows * 4,
    );
    const q = refRope(columns(qkv, rows, 4, 0, 2), rows, 1, 2, 2, positions, invFreq);
    const k = refRope(columns(qkv, rows, 4, 2, 2), rows, 1, 2, 2, positions, invFreq);
    const expected = Array.from({ length: rows }, (_, r) => [q[2 * r]!, q[2 * r + 1]!, k[2 * r]!, k[2 * r + 1]!]).flat();
    expectClose(rotated, expected, TOL.f32, 'rope many rows');
  });
});
