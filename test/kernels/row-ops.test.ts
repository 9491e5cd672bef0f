import { afterAll, beforeAll, describe, it } from 'vitest';
import { embeddingSum } from '../../src/kernels/embedding.js';
import { gatherRows, layerNorm, softmaxRows } from '../../src/kernels/row-ops.js';
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
import { refAdd, refEmbedding, refLayerNorm, refSoftmaxRows } from '../reference/ops-f64.js';

let gpu: TestGpu;
beforeAll(async () => {
  gpu = await createTestGpu();
});
afterAll(() => gpu?.destroy());

const TOL: Record<Dtype, number> = { f32: 1e-4, f16: 2e-2 };
const dtypes = ['f32', 'f16'] as const;
const skipF16 = (dtype: Dtype): boolean => dtype === 'f16' && !gpu.ctx.capabilities.shaderF16;

describe('layerNorm matches the float64 reference', () => {
  for (const dtype of dtypes) {
    for (const residual of [false, true]) {
      it(`${dtype}, ${residual ? 'fused residual' : 'no residual'}, dims not multiples of the workgroup`, async () => {
        if (skipF16(dtype)) return;
        for (const [rows, dim] of [
          [1, 1],
          [3, 63],
          [17, 130],
          [5, 770],
        ] as const) {
          // An offset mean (|mean| >> std) checks the two-pass statistics.
          const x = roundToDtype(randomArray(rows * dim).map((v) => v + 3), dtype);
          const r = roundToDtype(randomArray(rows * dim), dtype);
          const gamma = roundToDtype(randomArray(dim).map((v) => 1 + 0.3 * v), dtype);
          const beta = roundToDtype(randomArray(dim, 0.3), dtype);
          const eps = 1e-12;
          const y = poisoned(gpu, rows * dim, dtype);
          const got = await runAndRead(
            gpu,
            (enc) =>
              layerNorm(enc, dtype, {
                x: toDevice(gpu, x, dtype),
                residual: residual ? toDevice(gpu, r, dtype) : null,
                gamma: toDevice(gpu, gamma, dtype),
                beta: toDevice(gpu, beta, dtype),
                y,
                rows,
                dim,
                eps,
              }),
            y,
            rows * dim,
            dtype,
          );
          const input = residual ? refAdd(x, r) : x;
          expectClose(got, refLayerNorm(input, rows, dim, gamma, beta, eps), TOL[dtype], `layernorm ${rows}x${dim}`);
        }
      });
    }
  }
});

describe('softmaxRows matches the float64 reference', () => {
  for (const dtype of dtypes) {
    it(`${dtype}, large logits stay finite`, async () => {
      if (skipF16(dtype)) return;
      for (const [rows, cols] of [
        [1, 2],
        [7, 3],
        [4, 129],
      ] as const) {
        const x = roundToDtype(randomArray(rows * cols, 40), dtype);
        const y = poisoned(gpu, rows * cols);
        const got = await runAndRead(
          gpu,
          (enc) => softmaxRows(enc, dtype, { x: toDevice(gpu, x, dtype), y, rows, cols }),
          y,
          rows * cols,
        );
        expectClose(got, refSoftmaxRows(x, rows, cols), TOL[dtype], `softmax ${rows}x${cols}`);
      }
    });
  }
});

describe('embedding sum and row gather', () => {
  for (const dtype of dtypes) {
    it(`${dtype}: word + position + token type for packed ragged sequences`, async () => {
      if (skipF16(dtype)) return;
      const [vocab, maxPos, types, hidden] = [50, 20, 2, 70];
      const word = roundToDtype(randomArray(vocab * hidden), dtype);
      const pos = roundToDtype(randomArray(maxPos * hidden), dtype);
      const typ = roundToDtype(randomArray(types * hidden), dtype);
      const ids = [[1, 49, 7], [3], [0, 5, 9, 11, 2, 4]];
      const typeIds = ids.map((s) => s.map((_, i) => (i % 3 === 2 ? 1 : 0)));
      const table: number[] = [];
      ids.forEach((seq, s) => seq.forEach((id, i) => table.push(id, i, typeIds[s]![i]!)));
      const tokens = table.length / 3;
      const y = poisoned(gpu, tokens * hidden, dtype);
      const got = await runAndRead(
        gpu,
        (enc) =>
          embeddingSum(enc, dtype, {
            tokenTable: u32ToDevice(gpu, table),
            word: toDevice(gpu, word, dtype),
            position: toDevice(gpu, pos, dtype),
            tokenType: toDevice(gpu, typ, dtype),
            y,
            tokens,
            hidden,
          }),
        y,
        tokens * hidden,
        dtype,
      );
      expectClose(got, refEmbedding(ids, typeIds, word, pos, typ, hidden), TOL[dtype], 'embedding');
    });

    it(`${dtype}: gather_rows picks the requested rows`, async () => {
      if (skipF16(dtype)) return;
      const [rows, dim] = [11, 67];
      const x = roundToDtype(randomArray(rows * dim), dtype);
      const pick = [0, 4, 10, 4];
      const y = poisoned(gpu, pick.length * dim, dtype);
      const got = await runAndRead(
        gpu,
        (enc) =>
          gatherRows(enc, dtype, { rows: u32ToDevice(gpu, pick), x: toDevice(gpu, x, dtype), y, count: pick.length, dim }),
        y,
        pick.length * dim,
        dtype,
      );
      const expected = pick.flatMap((r) => Array.from(x.subarray(r * dim, (r + 1) * dim)));
      expectClose(got, expected, 0, 'gather');
    });
  }
});
