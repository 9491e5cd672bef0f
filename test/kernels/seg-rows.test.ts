import { afterAll, describe, expect, it } from 'vitest';
import { embedTables, scaleTables, segEmbed, segScale } from '../../src/kernels/seg-rows.js';
import { createTestGpu, poisoned, randomArray, roundToDtype, runAndRead, toDevice, u32ToDevice, type TestGpu } from '../helpers/gpu.js';
import { expectClose } from '../reference/compare.js';

// Segmented row operations (IA³ scaling, per-task embedding rows) against plain
// float64 loops written here; segments of different widths, offsets and strides in
// one dispatch, rows outside every segment untouched.

const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

describe('segmented row kernels match float64 loops', () => {
  for (const dtype of ['f32', 'f16'] as const) {
    it.skipIf(dtype === 'f16' && !gpu.ctx.capabilities.shaderF16)(`${dtype}: segScale scales each segment's columns in place and nothing else`, async () => {
      const rows = 37;
      const ld = 83;
      const x = roundToDtype(randomArray(rows * ld), dtype);
      const pool = roundToDtype(randomArray(500), dtype);
      const segments = [
        { first: 0 * ld + 5, rows: 4, width: 70, ld, scaleOff: 3 },
        { first: 9 * ld + 0, rows: 13, width: 83, ld, scaleOff: 100 },
        { first: 30 * ld + 61, rows: 7, width: 22, ld, scaleOff: 400 },
      ];
      const want = Float64Array.from(x);
      for (const s of segments) for (let r = 0; r < s.rows; r++) for (let c = 0; c < s.width; c++) want[s.first + r * s.ld + c] = want[s.first + r * s.ld + c]! * pool[s.scaleOff + c]!;
      const t = scaleTables(segments);
      const xs = toDevice(gpu, x, dtype);
      const got = await runAndRead(gpu, (enc) => segScale(enc, dtype, t, { records: u32ToDevice(gpu, t.records), tiles: u32ToDevice(gpu, t.tiles), pool: toDevice(gpu, pool, dtype), x: xs }), xs, rows * ld, dtype);
      expectClose(got, want, dtype === 'f32' ? 1e-6 : 2e-3, 'segScale');
    });

    it.skipIf(dtype === 'f16' && !gpu.ctx.capabilities.shaderF16)(`${dtype}: segEmbed writes task rows from their tables (with and without positions)`, async () => {
      const hidden = 29;
      const vocab = 11;
      const rows = 9;
      const tokenIds = Array.from({ length: rows }, (_, i) => (i * 5 + 2) % vocab);
      const positions = Array.from({ length: rows }, (_, i) => (i * 3) % 7);
      const pool = roundToDtype(randomArray(3 * vocab * hidden + 17), dtype);
      const posTable = roundToDtype(randomArray(7 * hidden), dtype);
      const segments = [
        { row0: 1, rows: 3, tableOff: 17 },
        { row0: 6, rows: 2, tableOff: 17 + 2 * vocab * hidden },
      ];
      for (const withPositions of [false, true]) {
        const y = poisoned(gpu, rows * hidden, dtype);
        const t = embedTables(segments, hidden);
        const got = await runAndRead(
          gpu,
          (enc) =>
            segEmbed(enc, dtype, t, {
              records: u32ToDevice(gpu, t.records),
              tiles: u32ToDevice(gpu, t.tiles),
              pool: toDevice(gpu, pool, dtype),
              tokenIds: u32ToDevice(gpu, tokenIds),
              y,
              hidden,
              positions: withPositions ? { positions: u32ToDevice(gpu, positions), table: toDevice(gpu, posTable, dtype) } : null,
            }),
          y,
          rows * hidden,
          dtype,
        );
        for (let r = 0; r < rows; r++) {
          const s = segments.find((g) => r >= g.row0 && r < g.row0 + g.rows);
          for (let c = 0; c < hidden; c++) {
            const v = got[r * hidden + c]!;
            if (!s) {
              expect(Number.isNaN(v), `row ${r} outside every segment stays untouched`).toBe(true);
              continue;
            }
            const want = pool[s.tableOff + tokenIds[r]! * hidden + c]! + (withPositions ? posTable[positions[r]! * hidden + c]! : 0);
            expect(Math.abs(v - want)).toBeLessThanOrEqual(dtype === 'f32' ? 1e-6 : 4e-3 * Math.max(1, Math.abs(want)));
          }
        }
      }
    });
  }
});
