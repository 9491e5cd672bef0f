import { afterAll, describe, expect, it } from 'vitest';
import type { BatchEncoder } from '../../src/gpu/batch-encoder.js';
import type { KernelSpec } from '../../src/gpu/pipeline-cache.js';
import { attention, packedKeyRanges, residentWorkgroupBytes } from '../../src/kernels/attention.js';
import { attentionCandidates, attentionChoiceName } from '../../src/kernels/candidates.js';
import { SlotField, SlotTable, slotSiteBase } from '../../src/kernels/slot-record.js';
import type { AttentionChoice, Dtype } from '../../src/kernels/types.js';
import {
  createTestGpu,
  encoder,
  poisoned,
  randomArray,
  roundToDtype,
  runAndRead,
  toDevice,
  u32ToDevice,
  type TestGpu,
} from '../helpers/gpu.js';
import { expectClose } from '../reference/compare.js';
import { refAttentionPacked } from '../reference/ops-f64.js';

// Created at collection time: tests skip (it.skipIf) on what the adapter lacks.
const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

const TOL: Record<Dtype, number> = { f32: 1e-4, f16: 2e-2 };
const dtypes = ['f32', 'f16'] as const;
const noF16 = (dtype: Dtype): boolean => dtype === 'f16' && !gpu.ctx.capabilities.shaderF16;

interface Case {
  lengths: number[];
  heads: number;
  headDim: number;
  /** Extra qkv columns after v, filled with NaN: a kernel that reads them writes NaN. */
  ldPad?: number;
}

/**
 * Shapes that straddle the tile (= workgroup) sizes 32, 64 and 128: a single key, partial last tiles (7, 65,
 * 130), exact tiles (64, 128), head dims that are no multiple of the workgroup or of 4, a padded row stride,
 * and one sequence of 1100 keys (35 tiles at WG 32, so the running max is raised and rescaled many times).
 * For the lanes form (head_dim % 4 == 0 and a row stride % 4 == 0; else it runs resident): head dims of
 * fewer vec4s than a lavapipe subgroup (12), more (64) and a non-multiple of it (36), sequences that share
 * a 64-query workgroup and a subgroup, NaN past v in a stride of whole vec4s, and 1100 keys in one sequence.
 */
const CASES: Case[] = [
  { lengths: [1], heads: 1, headDim: 5 },
  { lengths: [1, 7, 65, 130], heads: 2, headDim: 12 },
  { lengths: [64, 3, 128, 33], heads: 3, headDim: 20, ldPad: 7 },
  { lengths: [1100, 5], heads: 1, headDim: 6 },
  { lengths: [3, 70, 1, 129, 64], heads: 2, headDim: 64, ldPad: 8 },
  { lengths: [5, 1100, 2], heads: 1, headDim: 36 },
];
// One key bound for every case, as the engine passes its maxLength: one resident pipeline per choice and
// dtype, not one per case (lavapipe spends 1-2 s compiling each).
const MAX_KEYS = Math.max(...CASES.flatMap((c) => c.lengths));

/** Random q, k, v as the dtype stores them, and the packed [tokens, ld] qkv the kernel reads. */
function packedInputs(c: Case, dtype: Dtype) {
  const hidden = c.heads * c.headDim;
  const tokens = c.lengths.reduce((a, b) => a + b, 0);
  const ld = 3 * hidden + (c.ldPad ?? 0);
  // Scores up to ~4·sqrt(headDim): peaked enough that a tile's max matters and later tiles raise it.
  const q = roundToDtype(randomArray(tokens * hidden, 2), dtype);
  const k = roundToDtype(randomArray(tokens * hidden, 2), dtype);
  const v = roundToDtype(randomArray(tokens * hidden), dtype);
  const qkv = new Float64Array(tokens * ld).fill(Number.NaN);
  for (let t = 0; t < tokens; t++) {
    for (let col = 0; col < hidden; col++) {
      qkv[t * ld + col] = q[t * hidden + col]!;
      qkv[t * ld + hidden + col] = k[t * hidden + col]!;
      qkv[t * ld + 2 * hidden + col] = v[t * hidden + col]!;
    }
  }
  return { hidden, tokens, ld, q, k, v, qkv };
}

async function runAttention(
  c: Case,
  dtype: Dtype,
  choice: AttentionChoice,
  opts: { maxKeys?: number; tasks?: { rowSlot: number[]; slotTable: SlotTable; siteBase: number; pool: Float64Array } } = {},
): Promise<{ got: Float32Array; expected: Float64Array }> {
  const { hidden, tokens, ld, q, k, v, qkv } = packedInputs(c, dtype);
  const out = poisoned(gpu, tokens * hidden, dtype);
  const tasks = opts.tasks;
  const got = await runAndRead(
    gpu,
    (enc) =>
      attention(
        enc,
        dtype,
        {
          qkv: toDevice(gpu, qkv, dtype),
          keyRange: u32ToDevice(gpu, packedKeyRanges(c.lengths)),
          out,
          tokens,
          heads: c.heads,
          headDim: c.headDim,
          maxKeys: opts.maxKeys ?? MAX_KEYS,
          ldQkv: ld,
          tasks: tasks
            ? {
                rowSlot: u32ToDevice(gpu, tasks.rowSlot),
                slotTable: u32ToDevice(gpu, tasks.slotTable.words),
                siteBase: tasks.siteBase,
                pool: toDevice(gpu, tasks.pool, dtype),
              }
            : null,
        },
        'test.attention',
        choice,
      ),
    out,
    tokens * hidden,
    dtype,
  );
  return { got, expected: refAttentionPacked(q, k, v, c.lengths, c.heads, c.headDim) };
}

describe('attention over packed variable-length sequences matches the float64 reference', () => {
  for (const choice of attentionCandidates(gpu.ctx.capabilities)) {
    for (const dtype of dtypes) {
      const name = `${attentionChoiceName(choice)} ${dtype}`;
      it.skipIf(noF16(dtype))(`${name}: each query sees only its own sequence; ragged, partial-tile and 1100-key sequences`, async () => {
        for (const c of CASES) {
          const { got, expected } = await runAttention(c, dtype, choice);
          expectClose(got, expected, TOL[dtype], `${name} lengths=${c.lengths.join(',')} headDim=${c.headDim}`);
        }
      });
    }
  }
});

// The scaling is the same lines after the softmax in every workgroup size: one size per form.
describe('attention with TASKS scales each row\'s context by its slot\'s IA³ vector', () => {
  const forms = attentionCandidates(gpu.ctx.capabilities).some((c) => c.form === 'lanes') ? (['resident', 'online', 'lanes'] as const) : (['resident', 'online'] as const);
  for (const form of forms) {
    for (const dtype of dtypes) {
      const choice: AttentionChoice = { form, workgroupSize: 64 };
      const name = `${attentionChoiceName(choice)} ${dtype}`;
      it.skipIf(noF16(dtype))(`${name}: rows of slots 1 and 2 scaled by their own vectors, base rows untouched`, async () => {
        const c: Case = { lengths: [3, 70, 1], heads: 2, headDim: 12 };
        const hidden = c.heads * c.headDim;
        // Slot 0 is the base model; slots 1 and 2 scale. Site 0 holds decoy offsets, so a kernel that ignores
        // site_base reads the wrong vector.
        const numSlots = 3;
        const table = new SlotTable(2, numSlots);
        const site = 1;
        const decoy = 0;
        // Offsets that are no multiple of 4: the lanes form reads its vec4 chunks element by element.
        const scales = [hidden + 1, 2 * hidden + 1];
        table.set(0, 1, SlotField.contextScale, decoy);
        table.set(0, 2, SlotField.contextScale, decoy);
        table.set(site, 1, SlotField.contextScale, scales[0]!);
        table.set(site, 2, SlotField.contextScale, scales[1]!);
        const pool = roundToDtype(randomArray(3 * hidden + 2, 2), dtype);
        const rowSlot = c.lengths.flatMap((len, s) => Array<number>(len).fill([1, 2, 0][s]!));
        const { got, expected } = await runAttention(c, dtype, choice, {
          tasks: { rowSlot, slotTable: table, siteBase: slotSiteBase(site, numSlots), pool },
        });
        for (let t = 0; t < rowSlot.length; t++) {
          const slot = rowSlot[t]!;
          if (slot === 0) continue;
          for (let col = 0; col < hidden; col++) expected[t * hidden + col]! *= pool[scales[slot - 1]! + col]!;
        }
        expectClose(got, expected, TOL[dtype], `${name} TASKS`);
      });
    }
  }
});

describe('attention form choice', () => {
  it('a resident choice whose scores would overflow workgroup memory runs the online form, same result', async () => {
    const choice: AttentionChoice = { form: 'resident', workgroupSize: 64 };
    const c: Case = { lengths: [40, 1, 9], heads: 2, headDim: 12 };
    // maxKeys is only an upper bound: one past what fits makes the resident pipeline impossible to build
    // while the sequences themselves stay short.
    const limit = gpu.ctx.capabilities.maxComputeWorkgroupStorageSize;
    const maxKeys = limit / 4 + 1;
    expect(residentWorkgroupBytes(maxKeys, c.headDim, choice.workgroupSize)).toBeGreaterThan(limit);
    const { got, expected } = await runAttention(c, 'f32', choice, { maxKeys });
    expectClose(got, expected, TOL.f32, 'resident beyond the workgroup memory limit');
  });

  it('a lanes choice runs the resident form where the adapter has no single subgroup size, head_dim % 4 != 0 or ld % 4 != 0', () => {
    const recorded: string[] = [];
    const enc = (subgroupSize: number | null): BatchEncoder =>
      ({
        capabilities: { ...gpu.ctx.capabilities, subgroups: subgroupSize !== null, subgroupSize },
        dispatch(_label: string, spec: KernelSpec): void {
          recorded.push(spec.shader);
        },
      }) as unknown as BatchEncoder;
    const buf = {} as GPUBuffer;
    const lanes: AttentionChoice = { form: 'lanes', workgroupSize: 64 };
    const args = { qkv: buf, keyRange: buf, out: buf, tokens: 10, heads: 2, headDim: 8, maxKeys: 10 };
    attention(enc(null), 'f32', args, 'no subgroup size', lanes);
    attention(enc(8), 'f32', { ...args, headDim: 6 }, 'head_dim 6', lanes);
    attention(enc(8), 'f32', { ...args, ldQkv: 50 }, 'ld 50', lanes);
    attention(enc(8), 'f32', args, 'lanes', lanes);
    expect(recorded).toEqual(['attention', 'attention', 'attention', 'attention_lanes']);
  });

  it('refuses a workgroup size that is not a power of two (both forms reduce over the workgroup in halves or eighths)', () => {
    const c: Case = { lengths: [2], heads: 1, headDim: 4 };
    const { tokens, hidden, qkv } = packedInputs(c, 'f32');
    const args = {
      qkv: toDevice(gpu, qkv),
      keyRange: u32ToDevice(gpu, packedKeyRanges(c.lengths)),
      out: poisoned(gpu, tokens * hidden),
      tokens,
      heads: c.heads,
      headDim: c.headDim,
      maxKeys: 2,
    };
    for (const form of ['resident', 'online'] as const) {
      expect(() => attention(encoder(gpu), 'f32', args, 'test.attention', { form, workgroupSize: 48 })).toThrow(RangeError);
    }
  });
});
