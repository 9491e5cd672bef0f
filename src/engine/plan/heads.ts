import { segGemmTables, type SegGemmSegment, type SegmentTables } from '../../kernels/segmented.js';
import type { ResidentPet } from '../../pet/gpu-pool.js';
import type { SlotRows } from './rows.js';

/** Where each plan row's logits land, and the one segmented GEMM of all task heads. */
export interface HeadLayout {
  /** Sequences [0, baseHeadRows) use the base model's classifier (if any). */
  baseHeadRows: number;
  taskHeads: SegmentTables | null;
  /** Per plan row: offset and width of its logits, or width 0 (embedding task / headless base). */
  logitsOffset: number[];
  logitsWidth: number[];
  logitsElems: number;
}

/**
 * Base sequences first (the base classifier, `baseNumLabels` wide), then each
 * task's sequences through its own head; all task heads run as one segmented
 * GEMM over the pooled rows (`pooledWidth` wide).
 */
export function layOutHeads(
  slotTasks: readonly (ResidentPet | null)[],
  slotRows: readonly SlotRows[],
  sequences: number,
  pooledWidth: number,
  baseNumLabels: number,
): HeadLayout {
  const logitsOffset = new Array<number>(sequences).fill(0);
  const logitsWidth = new Array<number>(sequences).fill(0);
  let cursor = 0;
  const place = (first: number, count: number, width: number): void => {
    for (let s = first; s < first + count; s++) {
      logitsOffset[s] = cursor;
      logitsWidth[s] = width;
      cursor += width;
    }
  };
  const baseHeadRows = slotRows[0]?.seqs ?? 0;
  place(0, baseHeadRows, baseNumLabels);
  const segments: SegGemmSegment[] = [];
  for (let slot = 1; slot < slotTasks.length; slot++) {
    const task = slotTasks[slot]!;
    const head = task.packed.head;
    if (!head) continue;
    const { seqStart, seqs } = slotRows[slot]!;
    segments.push({
      rows: seqs, K: pooledWidth, N: head.numLabels, wOff: task.floatBase + head.wOff, bOff: task.floatBase + head.bOff,
      inOff: seqStart * pooledWidth, ldIn: pooledWidth, outOff: cursor, ldOut: head.numLabels, scale: 1, act: 'none',
    });
    place(seqStart, seqs, head.numLabels);
  }
  return {
    baseHeadRows,
    taskHeads: segments.length > 0 ? segGemmTables(segments) : null,
    logitsOffset,
    logitsWidth,
    logitsElems: cursor,
  };
}
