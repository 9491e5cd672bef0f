/**
 * What the self-tuner times: the hot kernels of one model at the shapes that model runs, and how to record
 * one candidate of each on scratch buffers. The model families describe their workload (ModelRunner,
 * DecoderRunner `tuneWorkload()`); this module knows nothing of tasks or batches.
 */
import type { BatchEncoder } from '../../gpu/batch-encoder.js';
import { uploadStorage } from '../../gpu/buffers.js';
import { f32ArrayToF16 } from '../../util/f16.js';
import { Rng } from '../../util/random.js';
import { attention, packedKeyRanges } from '../attention.js';
import { rmsNorm } from '../decoder-ops.js';
import { gemm } from '../gemm.js';
import { layerNorm } from '../row-ops.js';
import type { AttentionChoice, Dtype, GemmChoice } from '../types.js';

export interface TuneWorkload {
  dtype: Dtype;
  /** The linear layers of one transformer layer, as (N, K) of Y[M, N] = X[M, K]·Wᵀ. */
  linears: readonly { N: number; K: number }[];
  /** Rows of a typical large GEMM (tokens of a batch or prefill chunk). */
  largeRows: number;
  /** Rows of a typical decode step; null for encoders (no small GEMMs). */
  smallRows: number | null;
  /** Packed encoder attention at a typical batch; null for decoders (paged attention has its own kernel). */
  attention: { seqLengths: readonly number[]; heads: number; headDim: number } | null;
  /** The norm the model runs, at `largeRows` rows. */
  norm: { kind: 'layernorm' | 'rmsnorm'; dim: number };
}

/** Random scratch buffers for the workload's kernels, created once per tuning run. */
export class TuneBuffers {
  private readonly buffers: GPUBuffer[] = [];
  private readonly rng = new Rng(0x7e5e);

  constructor(
    private readonly device: GPUDevice,
    private readonly dtype: Dtype,
  ) {}

  /** A buffer of `elems` random values of the workload dtype. */
  random(elems: number, label: string): GPUBuffer {
    const values = this.rng.fillNormal(new Float32Array(elems), 0, 0.5);
    return this.keep(uploadStorage(this.device, this.dtype === 'f16' ? f32ArrayToF16(values) : values, label));
  }

  /** An output buffer of `elems` elements. */
  output(elems: number, label: string): GPUBuffer {
    const bytes = Math.max(4, Math.ceil((elems * (this.dtype === 'f16' ? 2 : 4)) / 4) * 4);
    return this.keep(this.device.createBuffer({ label, size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC }));
  }

  u32(values: Uint32Array, label: string): GPUBuffer {
    return this.keep(uploadStorage(this.device, values, label));
  }

  private keep(b: GPUBuffer): GPUBuffer {
    this.buffers.push(b);
    return b;
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
    this.buffers.length = 0;
  }
}

/** A recorder of one candidate over all the workload's shapes of its kernel class. */
export type RecordCandidate = (enc: BatchEncoder) => void;

export function gemmRecorder(w: TuneWorkload, bufs: TuneBuffers, rows: number, choice: GemmChoice): RecordCandidate {
  const maxK = Math.max(...w.linears.map((l) => l.K));
  const maxN = Math.max(...w.linears.map((l) => l.N));
  const x = bufs.random(rows * maxK, 'tune.x');
  const y = bufs.output(rows * maxN, 'tune.y');
  const weights = w.linears.map((l, i) => bufs.random(l.N * l.K, `tune.w${i}`));
  return (enc) =>
    w.linears.forEach((l, i) => gemm(enc, w.dtype, { x, w: weights[i]!, y, M: rows, N: l.N, K: l.K }, `tune.gemm${i}`, choice));
}

export function attentionRecorder(w: TuneWorkload, bufs: TuneBuffers, choice: AttentionChoice): RecordCandidate {
  const a = w.attention!;
  const tokens = a.seqLengths.reduce((s, n) => s + n, 0);
  const hidden = a.heads * a.headDim;
  const qkv = bufs.random(tokens * 3 * hidden, 'tune.qkv');
  const keyRange = bufs.u32(packedKeyRanges(a.seqLengths), 'tune.keyRange');
  const out = bufs.output(tokens * hidden, 'tune.context');
  const maxKeys = Math.max(...a.seqLengths);
  return (enc) =>
    attention(enc, w.dtype, { qkv, keyRange, out, tokens, heads: a.heads, headDim: a.headDim, maxKeys }, 'tune.attention', choice);
}

export function normRecorder(w: TuneWorkload, bufs: TuneBuffers, workgroupSize: number): RecordCandidate {
  const { dim, kind } = w.norm;
  const rows = w.largeRows;
  const x = bufs.random(rows * dim, 'tune.norm.x');
  const gamma = bufs.random(dim, 'tune.norm.gamma');
  const beta = bufs.random(dim, 'tune.norm.beta');
  const y = bufs.output(rows * dim, 'tune.norm.y');
  return (enc) =>
    kind === 'layernorm'
      ? layerNorm(enc, w.dtype, { x, gamma, beta, y, rows, dim, eps: 1e-5 }, 'tune.norm', workgroupSize)
      : rmsNorm(enc, w.dtype, { x, gamma, y, rows, dim, eps: 1e-5 }, 'tune.norm', workgroupSize);
}
