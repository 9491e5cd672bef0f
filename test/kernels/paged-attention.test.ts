import { afterAll, describe, expect, it } from 'vitest';
import type { BatchEncoder } from '../../src/gpu/batch-encoder.js';
import { kvWrite, NO_SLOT, pagedAttention } from '../../src/kernels/paged-attention.js';
import type { Dtype } from '../../src/kernels/types.js';
import { f16ArrayToF32 } from '../../src/util/f16.js';
import {
  createTestGpu,
  encoder,
  poisoned,
  randomArray,
  roundToDtype,
  toDevice,
  u32ToDevice,
  type TestGpu,
} from '../helpers/gpu.js';
import { expectClose } from '../reference/compare.js';
import { refAttentionCached, type RefQueryRow } from '../reference/ops-f64.js';

// Created at collection time: tests skip (it.skipIf) on what the adapter lacks.
const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

const TOL: Record<Dtype, number> = { f32: 1e-4, f16: 2e-2 };
const dtypes = ['f32', 'f16'] as const;
const noF16 = (dtype: Dtype): boolean => dtype === 'f16' && !gpu.ctx.capabilities.shaderF16;

/** Run `record`, then read each of `outs` back as f32, in order. */
async function runAndReadAll(
  record: (enc: BatchEncoder) => void,
  outs: { buffer: GPUBuffer; elements: number }[],
  dtype: Dtype,
): Promise<Float32Array[]> {
  const enc = encoder(gpu);
  record(enc);
  const bytesPer = dtype === 'f16' ? 2 : 4;
  for (const o of outs) enc.readback(o.buffer, 0, o.elements * bytesPer);
  const { readbacks } = await enc.submit();
  return readbacks.map((raw, i) => {
    const n = outs[i]!.elements;
    return dtype === 'f16' ? f16ArrayToF32(new Uint16Array(raw, 0, n)) : new Float32Array(raw, 0, n);
  });
}

interface PagedLayout {
  blockTables: Uint32Array;
  maxBlocksPerSeq: number;
  numSlots: number;
  slotOf(seq: number, j: number): number;
}

function shuffled(n: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/**
 * Paged placement of sequences: each gets ceil(length / blockTokens) physical
 * blocks drawn from a shuffled pool, so logical neighbours are not physical
 * ones. Table entries past a sequence's blocks name a spare block, which stays
 * NaN like every other unwritten slot: a kernel that reads past `visible`
 * turns its output NaN.
 */
function pageOut(lengths: readonly number[], blockTokens: number): PagedLayout {
  const blocksOf = lengths.map((len) => Math.ceil(len / blockTokens));
  const maxBlocksPerSeq = Math.max(...blocksOf) + 1;
  const totalBlocks = blocksOf.reduce((a, b) => a + b, 0) + 3;
  const pool = shuffled(totalBlocks);
  const spare = pool.pop()!;
  const blockTables = new Uint32Array(lengths.length * maxBlocksPerSeq).fill(spare);
  blocksOf.forEach((n, s) => {
    for (let b = 0; b < n; b++) blockTables[s * maxBlocksPerSeq + b] = pool.pop()!;
  });
  return {
    blockTables,
    maxBlocksPerSeq,
    numSlots: totalBlocks * blockTokens,
    slotOf: (seq, j) => blockTables[seq * maxBlocksPerSeq + Math.floor(j / blockTokens)]! * blockTokens + (j % blockTokens),
  };
}

/** Dense per-sequence histories copied into NaN-filled paged caches. */
function fillCache(
  layout: PagedLayout,
  dense: readonly Float64Array[],
  kvWidth: number,
): Float64Array {
  const cache = new Float64Array(layout.numSlots * kvWidth).fill(Number.NaN);
  dense.forEach((rows, s) => {
    for (let j = 0; j < rows.length / kvWidth; j++) {
      cache.set(rows.subarray(j * kvWidth, (j + 1) * kvWidth), layout.slotOf(s, j) * kvWidth);
    }
  });
  return cache;
}

/** Decode rows (every key visible) for all sequences, plus a prefill chunk: the last `chunk` rows of sequence `chunkSeq`. */
function queryRows(lengths: readonly number[], chunkSeq: number, chunk: number): RefQueryRow[] {
  const rows: RefQueryRow[] = lengths.map((len, seq) => ({ seq, visible: len }));
  const len = lengths[chunkSeq]!;
  for (let i = 0; i < chunk; i++) rows.push({ seq: chunkSeq, visible: len - chunk + 1 + i });
  return rows;
}

/** BLOOM's slopes for a power-of-two head count, 2^(−8(h+1)/heads). */
const alibiSlopesFor = (numHeads: number): Float64Array =>
  Float64Array.from({ length: numHeads }, (_, h) => Math.fround(2 ** ((-8 * (h + 1)) / numHeads)));

interface PagedCase {
  lengths: number[];
  chunkSeq: number;
  chunk: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  blockTokens: number;
  alibi: boolean;
}

async function checkPaged(dtype: Dtype, c: PagedCase): Promise<void> {
  const { numHeads, numKvHeads, headDim } = c;
  const qWidth = numHeads * headDim;
  const kvWidth = numKvHeads * headDim;
  const ldQkv = qWidth + 2 * kvWidth + 1;
  const rows = queryRows(c.lengths, c.chunkSeq, c.chunk);
  const tokens = rows.length;
  const keys = c.lengths.map((len) => roundToDtype(randomArray(len * kvWidth), dtype));
  const values = c.lengths.map((len) => roundToDtype(randomArray(len * kvWidth), dtype));
  // Larger q so the softmax is peaked, not a near-uniform mean that hides a wrong key.
  const qkv = roundToDtype(randomArray(tokens * ldQkv, 3), dtype);
  const q = new Float64Array(tokens * qWidth);
  for (let t = 0; t < tokens; t++) q.set(qkv.subarray(t * ldQkv, t * ldQkv + qWidth), t * qWidth);
  const layout = pageOut(c.lengths, c.blockTokens);
  const slopes = c.alibi ? alibiSlopesFor(numHeads) : null;
  const scale = 1 / Math.sqrt(headDim);

  const out = poisoned(gpu, tokens * qWidth, dtype);
  const [got] = await runAndReadAll(
    (enc) =>
      pagedAttention(enc, dtype, {
        qkv: toDevice(gpu, qkv, dtype),
        ldQkv,
        kCache: toDevice(gpu, fillCache(layout, keys, kvWidth), dtype),
        vCache: toDevice(gpu, fillCache(layout, values, kvWidth), dtype),
        rowInfo: u32ToDevice(gpu, rows.flatMap((r) => [r.seq, r.visible])),
        blockTables: u32ToDevice(gpu, layout.blockTables),
        maxBlocksPerSeq: layout.maxBlocksPerSeq,
        blockTokens: c.blockTokens,
        out,
        tokens,
        numHeads,
        numKvHeads,
        headDim,
        scale,
        alibiSlopes: slopes ? toDevice(gpu, slopes) : null,
      }),
    [{ buffer: out, elements: tokens * qWidth }],
    dtype,
  );
  const expected = refAttentionCached(q, rows, keys, values, numHeads, numKvHeads, headDim, scale, slopes);
  const label = `paged ${dtype} lengths=${c.lengths.join(',')} heads=${numHeads}/${numKvHeads} d=${headDim} block=${c.blockTokens} alibi=${c.alibi}`;
  expectClose(got!, expected, TOL[dtype], label);
}

describe('pagedAttention matches dense float64 attention over shuffled paged caches', () => {
  const cases: PagedCase[] = [
    // GQA ratio 1, blocks of 3, a whole sequence as one prefill chunk (visible 1..7).
    { lengths: [1, 7, 20], chunkSeq: 1, chunk: 7, numHeads: 4, numKvHeads: 4, headDim: 5, blockTokens: 3, alibi: false },
    // GQA ratio 2, lengths around the 64-key chunk, ALiBi.
    { lengths: [33, 64, 65], chunkSeq: 2, chunk: 5, numHeads: 4, numKvHeads: 2, headDim: 12, blockTokens: 16, alibi: true },
    // GQA ratio 4, ~1500 keys (many chunks), head dims past one per invocation.
    { lengths: [1500, 70, 3], chunkSeq: 0, chunk: 6, numHeads: 8, numKvHeads: 2, headDim: 80, blockTokens: 16, alibi: false },
    { lengths: [1499, 2], chunkSeq: 0, chunk: 3, numHeads: 8, numKvHeads: 2, headDim: 80, blockTokens: 16, alibi: true },
    { lengths: [200, 129], chunkSeq: 1, chunk: 4, numHeads: 4, numKvHeads: 1, headDim: 100, blockTokens: 7, alibi: true },
    { lengths: [100, 1], chunkSeq: 0, chunk: 2, numHeads: 2, numKvHeads: 1, headDim: 160, blockTokens: 32, alibi: false },
  ];
  for (const dtype of dtypes) {
    it.skipIf(noF16(dtype))(`${dtype}: GQA 1/2/4, ALiBi on/off, head dims 5 to 160, prefill chunks and decode rows in one call`, async () => {
      for (const c of cases) await checkPaged(dtype, c);
    });
  }

  it('rejects a head count that is not a multiple of the kv heads', () => {
    const b = toDevice(gpu, [0, 0, 0, 0]);
    const enc = { dispatch: () => undefined } as never;
    const args = { qkv: b, ldQkv: 12, kCache: b, vCache: b, rowInfo: b, blockTables: b, maxBlocksPerSeq: 1, blockTokens: 1, out: b };
    expect(() => pagedAttention(enc, 'f32', { ...args, tokens: 1, numHeads: 3, numKvHeads: 2, headDim: 4, scale: 1 })).toThrow(RangeError);
  });
});

describe('kvWrite copies each row k and v to its cache slot', () => {
  for (const dtype of dtypes) {
    it.skipIf(noF16(dtype))(`${dtype}: other slots keep their contents, NO_SLOT rows are skipped`, async () => {
      for (const [tokens, numHeads, numKvHeads, headDim] of [
        [1, 1, 1, 4],
        [37, 4, 2, 12],
        [5, 6, 3, 50],
      ] as const) {
        const kvWidth = numKvHeads * headDim;
        const kCol = numHeads * headDim;
        const vCol = kCol + kvWidth;
        const ldQkv = vCol + kvWidth + 5;
        const numSlots = tokens + 23;
        const qkv = roundToDtype(randomArray(tokens * ldQkv), dtype);
        const oldK = roundToDtype(randomArray(numSlots * kvWidth, 10), dtype);
        const oldV = roundToDtype(randomArray(numSlots * kvWidth, 10), dtype);
        const slotPool = shuffled(numSlots);
        const slots = Array.from({ length: tokens }, (_, t) => (t % 4 === 3 ? NO_SLOT : slotPool[t]!));
        const kCache = toDevice(gpu, oldK, dtype);
        const vCache = toDevice(gpu, oldV, dtype);
        const [gotK, gotV] = await runAndReadAll(
          (enc) =>
            kvWrite(enc, dtype, {
              qkv: toDevice(gpu, qkv, dtype),
              ldQkv,
              kCol,
              vCol,
              slotMapping: u32ToDevice(gpu, slots),
              kCache,
              vCache,
              tokens,
              kvWidth,
            }),
          [
            { buffer: kCache, elements: numSlots * kvWidth },
            { buffer: vCache, elements: numSlots * kvWidth },
          ],
          dtype,
        );
        const expectedK = Float64Array.from(oldK);
        const expectedV = Float64Array.from(oldV);
        slots.forEach((slot, t) => {
          if (slot === NO_SLOT) return;
          expectedK.set(qkv.subarray(t * ldQkv + kCol, t * ldQkv + kCol + kvWidth), slot * kvWidth);
          expectedV.set(qkv.subarray(t * ldQkv + vCol, t * ldQkv + vCol + kvWidth), slot * kvWidth);
        });
        expectClose(gotK!, expectedK, 0, `kv_write k ${tokens}x${kvWidth}`);
        expectClose(gotV!, expectedV, 0, `kv_write v ${tokens}x${kvWidth}`);
      }
    });
  }
});

describe('kvWrite then pagedAttention in one batch, as the decoder step runs them', () => {
  it('a prefill chunk attends to the cached prefix and to its own keys written in the same batch', async () => {
    const [numHeads, numKvHeads, headDim, blockTokens] = [4, 2, 12, 5];
    const [cached, chunk] = [11, 6];
    const qWidth = numHeads * headDim;
    const kvWidth = numKvHeads * headDim;
    const ldQkv = qWidth + 2 * kvWidth;
    const layout = pageOut([cached + chunk], blockTokens);
    const prefixK = randomArray(cached * kvWidth);
    const prefixV = randomArray(cached * kvWidth);
    const qkv = randomArray(chunk * ldQkv, 2);
    const rows = Array.from({ length: chunk }, (_, i) => ({ seq: 0, visible: cached + i + 1 }));
    const out = poisoned(gpu, chunk * qWidth);
    const kCache = toDevice(gpu, fillCache(layout, [prefixK], kvWidth));
    const vCache = toDevice(gpu, fillCache(layout, [prefixV], kvWidth));
    const qkvBuffer = toDevice(gpu, qkv);
    const scale = 1 / Math.sqrt(headDim);
    const [got] = await runAndReadAll(
      (enc) => {
        const slotMapping = u32ToDevice(gpu, rows.map((_, i) => layout.slotOf(0, cached + i)));
        kvWrite(enc, 'f32', { qkv: qkvBuffer, ldQkv, kCol: qWidth, vCol: qWidth + kvWidth, slotMapping, kCache, vCache, tokens: chunk, kvWidth });
        pagedAttention(enc, 'f32', {
          qkv: qkvBuffer,
          ldQkv,
          kCache,
          vCache,
          rowInfo: u32ToDevice(gpu, rows.flatMap((r) => [r.seq, r.visible])),
          blockTables: u32ToDevice(gpu, layout.blockTables),
          maxBlocksPerSeq: layout.maxBlocksPerSeq,
          blockTokens,
          out,
          tokens: chunk,
          numHeads,
          numKvHeads,
          headDim,
          scale,
        });
      },
      [{ buffer: out, elements: chunk * qWidth }],
      'f32',
    );
    const keys = new Float64Array((cached + chunk) * kvWidth);
    const values = new Float64Array((cached + chunk) * kvWidth);
    keys.set(prefixK);
    values.set(prefixV);
    const q = new Float64Array(chunk * qWidth);
    for (let t = 0; t < chunk; t++) {
      q.set(qkv.subarray(t * ldQkv, t * ldQkv + qWidth), t * qWidth);
      keys.set(qkv.subarray(t * ldQkv + qWidth, t * ldQkv + qWidth + kvWidth), (cached + t) * kvWidth);
      values.set(qkv.subarray(t * ldQkv + qWidth + kvWidth, (t + 1) * ldQkv), (cached + t) * kvWidth);
    }
    const expected = refAttentionCached(q, rows, [keys], [values], numHeads, numKvHeads, headDim, scale, null);
    expectClose(got!, expected, TOL.f32, 'kv_write + paged_attention');
  });
});

describe('paged kernels dispatch more than 65535 rows', () => {
  it('kvWrite and pagedAttention reach the last row', async () => {
    const tokens = 65535 + 5;
    const [headDim, blockTokens] = [2, 4];
    const ldQkv = 3 * headDim;
    const qkv = randomArray(tokens * ldQkv);
    // Every row writes its own slot of one long sequence, then sees one to three keys of it.
    const layout = pageOut([tokens], blockTokens);
    const rows = Array.from({ length: tokens }, (_, t) => ({ seq: 0, visible: 1 + (t % 3) }));
    const kCache = poisoned(gpu, layout.numSlots * headDim);
    const vCache = poisoned(gpu, layout.numSlots * headDim);
    const out = poisoned(gpu, tokens * headDim);
    const qkvBuffer = toDevice(gpu, qkv);
    const [gotOut, gotK] = await runAndReadAll(
      (enc) => {
        const slotMapping = u32ToDevice(gpu, rows.map((_, t) => layout.slotOf(0, t)));
        kvWrite(enc, 'f32', { qkv: qkvBuffer, ldQkv, kCol: headDim, vCol: 2 * headDim, slotMapping, kCache, vCache, tokens, kvWidth: headDim });
        pagedAttention(enc, 'f32', {
          qkv: qkvBuffer,
          ldQkv,
          kCache,
          vCache,
          rowInfo: u32ToDevice(gpu, rows.flatMap((r) => [r.seq, r.visible])),
          blockTables: u32ToDevice(gpu, layout.blockTables),
          maxBlocksPerSeq: layout.maxBlocksPerSeq,
          blockTokens,
          out,
          tokens,
          numHeads: 1,
          numKvHeads: 1,
          headDim,
          scale: 0.7,
        });
      },
      [
        { buffer: out, elements: tokens * headDim },
        { buffer: kCache, elements: layout.numSlots * headDim },
      ],
      'f32',
    );
    const keys = new Float64Array(tokens * headDim);
    const values = new Float64Array(tokens * headDim);
    const q = new Float64Array(tokens * headDim);
    const expectedK = new Float64Array(layout.numSlots * headDim).fill(Number.NaN);
    for (let t = 0; t < tokens; t++) {
      q.set(qkv.subarray(t * ldQkv, t * ldQkv + headDim), t * headDim);
      keys.set(qkv.subarray(t * ldQkv + headDim, t * ldQkv + 2 * headDim), t * headDim);
      values.set(qkv.subarray(t * ldQkv + 2 * headDim, (t + 1) * ldQkv), t * headDim);
      expectedK.set(keys.subarray(t * headDim, (t + 1) * headDim), layout.slotOf(0, t) * headDim);
    }
    const written = Array.from({ length: tokens }, (_, t) => layout.slotOf(0, t));
    const gotWritten = written.flatMap((slot) => Array.from(gotK!.subarray(slot * headDim, (slot + 1) * headDim)));
    expectClose(gotWritten, Array.from(keys), TOL.f32, 'kv_write many rows');
    expectClose(gotOut!, refAttentionCached(q, rows, [keys], [values], 1, 1, headDim, 0.7, null), TOL.f32, 'paged many rows');
  });
});
