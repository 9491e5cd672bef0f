import type { BatchEncoder, BufferRange } from '../gpu/batch-encoder.js';
import { Uniforms } from '../gpu/uniforms.js';
import type { Dtype } from './types.js';

/**
 * Row-wise per-task operations over segments of rows (one task's run of rows
 * each): IA³ column scaling and per-task embedding tables. Like the segmented
 * GEMMs, one dispatch serves every task of a step; a tile is one (segment, row).
 */

/** x[first + r·ld + c] *= pool[scaleOff + c], c < width, r < rows. Offsets in elements. */
export interface ScaleSegment {
  first: number;
  rows: number;
  width: number;
  ld: number;
  scaleOff: number;
}

/** Rows [row0, row0 + rows) read their token's row of the table at tableOff ([vocab, hidden] in the pool). */
export interface EmbedSegment {
  row0: number;
  rows: number;
  tableOff: number;
}

export interface RowSegmentTables {
  records: Uint32Array;
  tiles: Uint32Array;
  tileCount: number;
  maxWidth: number;
}

function tables(segments: readonly { rows: number }[], record: (i: number) => number[], maxWidth: number): RowSegmentTables {
  const records = new Uint32Array(segments.length * 4);
  const tiles: number[] = [];
  segments.forEach((s, i) => {
    records.set(record(i), i * 4);
    for (let r = 0; r < s.rows; r++) tiles.push(i, r);
  });
  return { records, tiles: Uint32Array.from(tiles), tileCount: tiles.length / 2, maxWidth };
}

export const scaleTables = (segments: readonly ScaleSegment[]): RowSegmentTables =>
  tables(segments, (i) => {
    const s = segments[i]!;
    return [s.first, s.width, s.ld, s.scaleOff];
  }, Math.max(0, ...segments.map((s) => s.width)));

export const embedTables = (segments: readonly EmbedSegment[], hidden: number): RowSegmentTables =>
  tables(segments, (i) => [segments[i]!.row0, segments[i]!.tableOff, 0, 0], hidden);

const grid = (t: RowSegmentTables): [number, number, number] => [Math.ceil(t.maxWidth / 64), Math.min(t.tileCount, 65535), Math.ceil(t.tileCount / 65535)];

export interface RowSegmentBuffers {
  records: GPUBuffer | BufferRange;
  tiles: GPUBuffer | BufferRange;
  pool: GPUBuffer;
}

export function segScale(enc: BatchEncoder, dtype: Dtype, t: RowSegmentTables, b: RowSegmentBuffers & { x: GPUBuffer }, label = 'seg_scale'): void {
  if (t.tileCount === 0) return;
  enc.dispatch(label, { shader: 'seg_scale', params: { DTYPE: dtype } }, new Uniforms().u32(t.tileCount), [b.records, b.tiles, b.pool, b.x], grid(t));
}

export function segEmbed(
  enc: BatchEncoder,
  dtype: Dtype,
  t: RowSegmentTables,
  b: RowSegmentBuffers & {
    tokenIds: GPUBuffer;
    y: GPUBuffer;
    hidden: number;
    /** Learned positions added to the task's word row (GPT-2): u32 [rows] and the [maxPositions, hidden] table. */
    positions: { positions: GPUBuffer; table: GPUBuffer } | null;
  },
  label = 'seg_embed',
): void {
  if (t.tileCount === 0) return;
  const bindings = [b.records, b.tiles, b.tokenIds, b.pool, b.y];
  if (b.positions) bindings.push(b.positions.positions, b.positions.table);
  enc.dispatch(label, { shader: 'seg_embed', params: { DTYPE: dtype, POSITIONS: !!b.positions } }, new Uniforms().u32(t.tileCount).u32(b.hidden), bindings, grid(t));
}
