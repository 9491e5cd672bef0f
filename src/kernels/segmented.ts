import type { BatchEncoder, BufferRange } from '../gpu/batch-encoder.js';
import { Uniforms } from '../gpu/uniforms.js';
import { tuning } from './tuning.js';
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
  /** Stored entries of this segment's sparse matrix (host-side work accounting; default K·N). */
  nnz?: number;
}

const ACT_CODE = { none: 0, relu: 1, gelu: 2 } as const;

/** Segment records + tile table (segment, first row) for `rowsPerTile`-row workgroups. */
export interface SegmentTables {
  records: Uint32Array;
  tiles: Uint32Array;
  /**
   * 'tiles': 32-row tiles, lanes along rows (shaders/seg_gemm.wgsl); 'rows': one
   * tile per row, lanes along columns (seg_gemv.wgsl, Punica's BGMV case) for
   * segments of a few rows, where a 32-row tile would leave most lanes idle.
   */
  layout: 'tiles' | 'rows';
  tileCount: number;
  maxN: number;
  /** First tile of each segment (tiles are in segment order), plus the total: for one-dispatch-per-segment runs. */
  segmentTileStart: number[];
  /**
   * Host-side accounting of the dispatch's work: FLOPs, and elements (activations
   * and PET floats) plus u32 words (sparse indices) it moves at least once.
   * The operator scheduler turns these into arithmetic intensity.
   */
  work: { flops: number; elems: number; words: number };
}

function tileTable(rows: number[], rowsPerTile: number): { tiles: Uint32Array; starts: number[] } {
  const tiles: number[] = [];
  const starts: number[] = [];
  rows.forEach((r, s) => {
    starts.push(tiles.length / 2);
    for (let first = 0; first < r; first += rowsPerTile) tiles.push(s, first);
  });
  starts.push(tiles.length / 2);
  return { tiles: Uint32Array.from(tiles), starts };
}

/** Pick the row layout when segments average few rows (decode steps), per tuning.segGemvMaxMeanRows. */
function gemmLayout(segments: readonly SegGemmSegment[], layout: 'tiles' | 'rows' | 'auto'): 'tiles' | 'rows' {
  if (layout !== 'auto') return layout;
  const rows = segments.reduce((n, s) => n + s.rows, 0);
  return segments.length > 0 && rows / segments.length <= tuning.segGemvMaxMeanRows ? 'rows' : 'tiles';
}

export function segGemmTables(segments: readonly SegGemmSegment[], layout: 'tiles' | 'rows' | 'auto' = 'auto'): SegmentTables {
  const chosen = gemmLayout(segments, layout);
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
  const { tiles, starts } = tileTable(segments.map((s) => s.rows), chosen === 'rows' ? 1 : 32);
  const work = { flops: 0, elems: 0, words: 0 };
  for (const s of segments) {
    work.flops += 2 * s.rows * s.K * s.N;
    work.elems += s.rows * s.K + s.K * s.N + s.rows * s.N;
  }
  return { records, tiles, layout: chosen, tileCount: tiles.length / 2, maxN: Math.max(0, ...segments.map((s) => s.N)), segmentTileStart: starts, work };
}

export function segSparseTables(segments: readonly SegSparseSegment[]): SegmentTables {
  const records = new Uint32Array(segments.length * RECORD);
  segments.forEach((s, i) => {
    records.set(
      [i, s.rows, s.K, s.N, s.ptrOff, s.idxOff, s.valOff, s.wOff, s.inOff, s.ldIn, s.outOff, s.ldOut],
      i * RECORD,
    );
  });
  const { tiles, starts } = tileTable(segments.map((s) => s.rows), 32);
  const work = { flops: 0, elems: 0, words: 0 };
  for (const s of segments) {
    const nnz = s.nnz ?? s.K * s.N;
    work.flops += 2 * s.rows * nnz;
    // Gathered X entries are re-read per row (no reuse across the sparse pattern), values once.
    work.elems += s.rows * nnz + nnz + s.rows * s.N;
    work.words += nnz + s.N + 1;
  }
  return { records, tiles, layout: 'tiles', tileCount: tiles.length / 2, maxN: Math.max(0, ...segments.map((s) => s.N)), segmentTileStart: starts, work };
}

function grid(columnsPerGroup: number, maxN: number, tileCount: number): [number, number, number] {
  const y = Math.min(tileCount, 65535);
  return [Math.ceil(maxN / columnsPerGroup), y, Math.ceil(tileCount / 65535)];
}

/**
 * Tile windows to dispatch: normally ONE dispatch over all segments; with
 * `perSegment` (the baseline the benchmark compares against) one dispatch per
 * segment over its own window of the tile table.
 */
function tileWindows(t: SegmentTables, perSegment: boolean): [from: number, to: number][] {
  if (!perSegment) return [[0, t.tileCount]];
  const out: [number, number][] = [];
  for (let s = 0; s + 1 < t.segmentTileStart.length; s++) {
    const from = t.segmentTileStart[s]!;
    const to = t.segmentTileStart[s + 1]!;
    if (to > from) out.push([from, to]);
  }
  return out;
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
  perSegment = false,
): void {
  if (t.tileCount === 0) return;
  const rows = t.layout === 'rows';
  const spec = { shader: rows ? 'seg_gemv' : 'seg_gemm', params: { DTYPE: dtype, ACCUMULATE: accumulate } };
  for (const [from, to] of tileWindows(t, perSegment)) {
    enc.dispatch(label, spec, new Uniforms().u32(to).u32(from), [b.records, b.tiles, b.inp, b.pool, b.out], grid(rows ? 256 : 32, t.maxN, to - from));
  }
}

export function segSparse(
  enc: BatchEncoder,
  dtype: Dtype,
  t: SegmentTables,
  b: SegDispatchBuffers & { weight: GPUBuffer },
  label = 'seg_sparse',
  perSegment = false,
): void {
  if (t.tileCount === 0) return;
  const spec = { shader: 'seg_sparse', params: { DTYPE: dtype } };
  for (const [from, to] of tileWindows(t, perSegment)) {
    enc.dispatch(
      label,
      spec,
      new Uniforms().u32(to).u32(from),
      [b.records, b.tiles, b.inp, b.pool, b.pool, b.weight, b.out],
      grid(8, t.maxN, to - from),
    );
  }
}
