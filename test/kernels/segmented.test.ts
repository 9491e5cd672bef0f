import { afterAll, describe, expect, it } from 'vitest';
import { uploadStorage } from '../../src/gpu/buffers.js';
import {
  NONE,
  segGemm,
  segGemmTables,
  segSparse,
  segSparseTables,
  type SegGemmSegment,
  type SegSparseSegment,
} from '../../src/kernels/segmented.js';
import type { Dtype } from '../../src/kernels/types.js';
import { createTestGpu, randomArray, roundToDtype, runAndRead, toDevice, type TestGpu } from '../helpers/gpu.js';
import { expectClose } from '../reference/compare.js';
import { refGeluErf, refLinear } from '../reference/ops-f64.js';

// Created at collection time: tests skip (it.skipIf) on what the adapter lacks.
const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

const TOL: Record<Dtype, number> = { f32: 1e-4, f16: 2e-2 };
const u32 = (a: Uint32Array): GPUBuffer => uploadStorage(gpu.ctx.device, a, 'tables');

describe('segmented GEMM (one dispatch, per-segment rank/width) matches per-segment float64 GEMMs', () => {
  for (const dtype of ['f32', 'f16'] as const) {
    for (const [accumulate, layout] of [[false, 'tiles'], [true, 'tiles'], [false, 'rows'], [true, 'rows']] as const) {
      it.skipIf(dtype === 'f16' && !gpu.ctx.capabilities.shaderF16)(`${dtype}, ${accumulate ? 'accumulating' : 'writing'}, ${layout} layout: ranks 1, 3, 17, 64, 300 with bias, scale and activations`, async () => {
        // Input rows [T, ldIn]; each segment reads its rows and writes its own block of out.
        const shapes = [
          { rows: 5, K: 20, N: 1, act: 'none' as const, bias: false },
          { rows: 33, K: 7, N: 3, act: 'relu' as const, bias: true },
          { rows: 1, K: 20, N: 17, act: 'gelu' as const, bias: true },
          { rows: 70, K: 13, N: 64, act: 'none' as const, bias: false },
          { rows: 2, K: 5, N: 300, act: 'relu' as const, bias: true },
        ];
        const ldIn = 24;
        const T = shapes.reduce((n, s) => n + s.rows, 0);
        const inp = roundToDtype(randomArray(T * ldIn), dtype);
        const pool: number[] = [];
        const segments: SegGemmSegment[] = [];
        let row = 0;
        let outOff = 0;
        const expectedParts: { off: number; ld: number; rows: number; N: number; values: Float64Array }[] = [];
        for (const s of shapes) {
          const w = roundToDtype(randomArray(s.N * s.K), dtype);
          const bvec = roundToDtype(randomArray(s.N), dtype);
          const wOff = pool.length;
          pool.push(...w);
          const bOff = s.bias ? pool.length : NONE;
          if (s.bias) pool.push(...bvec);
          const scale = 0.5 + Math.random();
          const ldOut = s.N + 2; // gaps in out stay untouched
          segments.push({ rows: s.rows, K: s.K, N: s.N, wOff, bOff, inOff: row * ldIn, ldIn, outOff, ldOut, scale, act: s.act });
          const x = new Float64Array(s.rows * s.K);
          for (let i = 0; i < s.rows; i++) for (let k = 0; k < s.K; k++) x[i * s.K + k] = inp[(row + i) * ldIn + k]!;
          let y: Float64Array = refLinear(x, s.rows, s.K, w, null, s.N).map((v, i) => v * scale + (s.bias ? bvec[i % s.N]! : 0));
          if (s.act === 'relu') y = y.map((v) => Math.max(v, 0));
          if (s.act === 'gelu') y = refGeluErf(y);
          expectedParts.push({ off: outOff, ld: ldOut, rows: s.rows, N: s.N, values: y });
          row += s.rows;
          outOff += s.rows * ldOut;
        }
        const outInit = roundToDtype(randomArray(outOff), dtype);
        const out = toDevice(gpu, outInit, dtype);
        const tables = segGemmTables(segments, layout);
        expect(tables.layout).toBe(layout);
        const got = await runAndRead(
          gpu,
          (enc) =>
            segGemm(
              enc,
              dtype,
              tables,
              {
                records: u32(tables.records),
                tiles: u32(tables.tiles),
                inp: toDevice(gpu, inp, dtype),
                pool: toDevice(gpu, pool, dtype),
                out,
              },
              accumulate,
            ),
          out,
          outOff,
          dtype,
        );
        const expected = Float64Array.from(outInit);
        for (const p of expectedParts) {
          for (let i = 0; i < p.rows; i++) {
            for (let n = 0; n < p.N; n++) {
              const o = p.off + i * p.ld + n;
              expected[o] = (accumulate ? expected[o]! : 0) + p.values[i * p.N + n]!;
            }
          }
        }
        expectClose(got, expected, TOL[dtype], `seg_gemm ${dtype}`);
      });
    }
  }
});

function randomCsr(N: number, K: number, density: number): { ptr: number[]; idx: number[]; dense: Float64Array; nnz: number } {
  const ptr = [0];
  const idx: number[] = [];
  const dense = new Float64Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      if (Math.random() < density) {
        idx.push(k);
        dense[n * K + k] = 1; // marks a stored position
      }
    }
    ptr.push(idx.length);
  }
  return { ptr, idx, dense, nnz: idx.length };
}

// f32 here (the test packs u32 and f32 words by hand); the f16 pool layout is covered by the PET engine tests.
describe('segmented sparse delta (diff values / mask from W) writes every element of its rows, matching float64', () => {
  for (const dtype of ['f32'] as const) {
    it(`${dtype}: diff and mask segments in one dispatch overwrite NaN-poisoned rows`, async () => {
      const [K, N, ldIn] = [37, 70, 40];
      const weight = roundToDtype(randomArray(2 * N * K), dtype); // two blocks, like a fused weight
      const specs = [
        { rows: 3, mask: false, density: 0.05, block: 0 },
        { rows: 19, mask: true, density: 0.2, block: 1 },
        { rows: 9, mask: false, density: 0.3, block: 0 },
      ];
      const T = specs.reduce((n, s) => n + s.rows, 0);
      const inp = roundToDtype(randomArray(T * ldIn), dtype);
      // Pool as raw 32-bit words: u32 CSR arrays and (f32) values share it.
      const words: number[] = [];
      const segments: SegSparseSegment[] = [];
      const expected = new Float64Array(T * N);
      let row = 0;
      const valueWords: { at: number; v: number }[] = [];
      for (const s of specs) {
        const csr = randomCsr(N, K, s.density);
        const ptrOff = words.length;
        words.push(...csr.ptr);
        const idxOff = words.length;
        words.push(...csr.idx);
        let valOff = NONE;
        const vals = roundToDtype(randomArray(csr.nnz, 0.5), dtype);
        if (!s.mask) {
          valOff = words.length;
          vals.forEach((v, j) => valueWords.push({ at: valOff + j, v }));
          words.push(...new Array<number>(csr.nnz).fill(0));
        }
        const wOff = s.block * N * K;
        segments.push({ rows: s.rows, K, N, ptrOff, idxOff, valOff, wOff, inOff: row * ldIn, ldIn, outOff: row * N, ldOut: N });
        for (let i = 0; i < s.rows; i++) {
          for (let n = 0; n < N; n++) {
            let acc = 0;
            for (let j = csr.ptr[n]!; j < csr.ptr[n + 1]!; j++) {
              const k = csr.idx[j]!;
              const v = s.mask ? -weight[wOff + n * K + k]! : vals[j]!;
              acc += inp[(row + i) * ldIn + k]! * v;
            }
            expected[(row + i) * N + n] = acc;
          }
        }
        row += s.rows;
      }
      const poolBytes = new Uint32Array(words);
      const f32view = new Float32Array(poolBytes.buffer);
      for (const { at, v } of valueWords) f32view[at] = v;
      const out = toDevice(gpu, new Float32Array(T * N).fill(Number.NaN));
      const tables = segSparseTables(segments);
      const got = await runAndRead(
        gpu,
        (enc) => {
          segSparse(enc, 'f32', tables, {
            records: u32(tables.records),
            tiles: u32(tables.tiles),
            inp: toDevice(gpu, inp),
            pool: uploadStorage(gpu.ctx.device, poolBytes, 'pool'),
            weight: toDevice(gpu, weight),
            out,
          });
        },
        out,
        T * N,
      );
      expectClose(got, expected, TOL.f32, 'seg_sparse');
    });
  }
});
