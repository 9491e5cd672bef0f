import type { BatchEncoder, BufferRange } from '../gpu/batch-encoder.js';
import { Uniforms } from '../gpu/uniforms.js';
import type { Dtype } from './types.js';

export const NONE = 0xffffffff;
const RECORD = 12;

/** One small GEMM of a segmented dispatch (shaders/seg_gemm.wgsl). Offsets are in elements. */
export interface SegGemmSegment {
  rows: number;
  K: number;
  N: number;
  /** Weight [N, K] in the pool. */
  wOff: number;
  /** Bias [N] in the pool, or NONE. */
  bOff: number;
  inOff: number;
  ldIn: number;
  outOff: number;
  ldOut: number;
  scale: number;
  act: 'none' | 'relu' | 'gelu';
}

/** One sparse CSR delta of a segmented dispatch (shaders/seg_sparse.wgsl). */
export interface SegSparseSegment {
  rows: number;
  K: number;
  N: number;
  /** u32 element offsets (pool viewed as u32) of row pointers [N+1] and column indices [nnz]. */
  ptrOff: number;
  idxOff: number;
  /** Values [nnz] in the pool, or NONE to use −W (mask). */
  valOff: number;
  /** Element offset of the site's block in the shared weight (mask). */
  wOff: number;
  inOff: number;
  ldIn: number;
  outOff: number;
  ldOut: number;
}

const ACT_CODE = { none: 0, relu: 1, gelu: 2 } as const;

/** Segment records + tile table (segment, first row) for `rowsPerTile`-row workgroups. */
export interface SegmentTables {
  records: Uint32Array;
  tiles: Uint32Array;
  tileCount: number;
  maxN: number;
}

function tileTable(rows: number[], rowsPerTile: number): Uint32Array {
  const tiles: number[] = [];
  rows.forEach((r, s) => {
    for (let first = 0; first < r; first += rowsPerTile) tiles.push(s, first);
  });
  return Uint32Array.from(tiles);
}

export function segGemmTables(segments: readonly SegGemmSegment[]): SegmentTables {
  const records = new Uint32Array(segments.length * RECORD);
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  segments.forEach((s, i) => {
    f32[0] = s.scale;
    records.set(
      [i, s.rows, s.K, s.N, s.wOff, s.bOff, s.inOff, s.ldIn, s.outOff, s.ldOut, u32[0]!, ACT_CODE[s.act]],
      i * RECORD,
    );
  });
  const tiles = tileTable(segments.map((s) => s.rows), 32);
  return { records, tiles, tileCount: tiles.length / 2, maxN: Math.max(0, ...segments.map((s) => s.N)) };
}

export function segSparseTables(segments: readonly SegSparseSegment[]): SegmentTables {
  const records = new Uint32Array(segments.length * RECORD);
  segments.forEach((s, i) => {
    records.set(
      [i, s.rows, s.K, s.N, s.ptrOff, s.idxOff, s.valOff, s.wOff, s.inOff, s.ldIn, s.outOff, s.ldOut],
      i * RECORD,
    );
  });
  const tiles = tileTable(segments.map((s) => s.rows), 8);
  return { records, tiles, tileCount: tiles.length / 2, maxN: Math.max(0, ...segments.map((s) => s.N)) };
}

function grid(columnsPerGroup: number, t: SegmentTables): [number, number, number] {
  const y = Math.min(t.tileCount, 65535);
  return [Math.ceil(t.maxN / columnsPerGroup), y, Math.ceil(t.tileCount / 65535)];
}

export interface SegDispatchBuffers {
  /** u32 records and tiles, already uploaded (see segGemmTables). */
  records: GPUBuffer | BufferRange;
  tiles: GPUBuffer | BufferRange;
  inp: GPUBuffer;
  pool: GPUBuffer;
  out: GPUBuffer;
}

export function segGemm(
  enc: BatchEncoder,
  dtype: Dtype,
  t: SegmentTables,
  b: SegDispatchBuffers,
  accumulate: boolean,
  label = 'seg_gemm',
): void {
  if (t.tileCount === 0) return;
  const spec = { shader: 'seg_gemm', params: { DTYPE: dtype, ACCUMULATE: accumulate } };
  enc.dispatch(label, spec, new Uniforms().u32(t.tileCount), [b.records, b.tiles, b.inp, b.pool, b.out], grid(32, t));
}

export function segSparse(
  enc: BatchEncoder,
  dtype: Dtype,
  t: SegmentTables,
  b: SegDispatchBuffers & { weight: GPUBuffer },
  label = 'seg_sparse',
): void {
  if (t.tileCount === 0) return;
  const spec = { shader: 'seg_sparse', params: { DTYPE: dtype } };
  enc.dispatch(
    label,
    spec,
    new Uniforms().u32(t.tileCount),
    [b.records, b.tiles, b.inp, b.pool, b.pool, b.weight, b.out],
    grid(64, t),
  );
}

/** Zero `count` elements of `out` from `offset`. */
export function fillZero(enc: BatchEncoder, dtype: Dtype, out: GPUBuffer, offset: number, count: number, label = 'fill'): void {
  if (count === 0) return;
  const groups = Math.ceil(count / 256);
  const x = Math.min(groups, 65535);
  enc.dispatch(label, { shader: 'fill', params: { DTYPE: dtype } }, new Uniforms().u32(offset).u32(count), [out], [
    x,
    Math.ceil(groups / x),
  ]);
}
