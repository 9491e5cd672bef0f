import type { BatchEncoder, PhaseTiming } from '../gpu/batch-encoder.js';
import type { Dtype } from '../kernels/types.js';
import { bytesPerElement } from '../kernels/types.js';
import type { GraphBuffers, PackedShape } from '../model/families/types.js';
import { f16ArrayToF32 } from '../util/f16.js';

export interface OutputSelection {
  lastHiddenState?: boolean;
  pooled?: boolean;
  logits?: boolean;
}

export interface RunResult {
  /** Per sequence, [length × hidden] row-major (when requested). */
  lastHiddenState: Float32Array[] | null;
  /** [sequences × hidden] (when requested). */
  pooled: Float32Array | null;
  /** [sequences × labels] (when requested and the model has a classifier). */
  logits: Float32Array | null;
  /** Device time per phase, when run with `profile`. */
  phases: PhaseTiming[] | null;
}

/** Per-row answer of a mixed batch, in the caller's row order. */
export interface TaskRowResult {
  /** [numLabels] of the row's task (base classifier for base rows), or null for embedding tasks. */
  logits: Float32Array | null;
  /** [hidden] pooled output (when requested). */
  pooled: Float32Array | null;
  /** [length × hidden] (when requested). */
  lastHiddenState: Float32Array | null;
}

/** The batch outputs a caller asked for: scheduled as readbacks of one batch, decoded after it. */
export class BatchReadback {
  private readonly e: number;
  private hiddenIdx = -1;
  private pooledIdx = -1;
  private logitsIdx = -1;

  constructor(
    private readonly dtype: Dtype,
    private readonly hidden: number,
    private readonly shape: PackedShape,
    private readonly logitsElems: number,
  ) {
    this.e = bytesPerElement(dtype);
  }

  request(enc: BatchEncoder, buffers: GraphBuffers, outputs: OutputSelection): void {
    const { tokens, sequences } = this.shape;
    if (outputs.lastHiddenState) this.hiddenIdx = enc.readback(buffers.hidden, 0, tokens * this.hidden * this.e);
    if (outputs.pooled) this.pooledIdx = enc.readback(buffers.pooled, 0, sequences * this.hidden * this.e);
    if (outputs.logits && this.logitsElems > 0) this.logitsIdx = enc.readback(buffers.logits, 0, this.logitsElems * this.e);
  }

  /** Decode the readbacks (serving dtype → f32); last_hidden_state split per sequence of `lengths`. */
  decode(readbacks: readonly ArrayBuffer[], lengths: readonly number[], phases: PhaseTiming[] | null): RunResult {
    const H = this.hidden;
    let lastHiddenState: Float32Array[] | null = null;
    if (this.hiddenIdx >= 0) {
      const all = this.toF32(readbacks[this.hiddenIdx], this.shape.tokens * H);
      lastHiddenState = [];
      let row = 0;
      for (const len of lengths) {
        lastHiddenState.push(all.slice(row * H, (row + len) * H));
        row += len;
      }
    }
    return {
      lastHiddenState,
      pooled: this.pooledIdx >= 0 ? this.toF32(readbacks[this.pooledIdx], this.shape.sequences * H) : null,
      logits: this.logitsIdx >= 0 ? this.toF32(readbacks[this.logitsIdx], this.logitsElems) : null,
      phases,
    };
  }

  private toF32(raw: ArrayBuffer | undefined, n: number): Float32Array {
    if (!raw) throw new Error('missing readback');
    return this.dtype === 'f16' ? f16ArrayToF32(new Uint16Array(raw, 0, n)) : new Float32Array(raw, 0, n);
  }
}

/** Row i of a run result: logits at (offset, width) (width 0: none), pooled and hidden state of sequence i. */
export function resultRow(r: RunResult, i: number, hidden: number, logitsOffset: number, logitsWidth: number): TaskRowResult {
  return {
    logits: r.logits && logitsWidth > 0 ? r.logits.slice(logitsOffset, logitsOffset + logitsWidth) : null,
    pooled: r.pooled ? r.pooled.slice(i * hidden, (i + 1) * hidden) : null,
    lastHiddenState: r.lastHiddenState?.[i] ?? null,
  };
}
