import type { TensorFile } from '../../tensor-source.js';
import { TensorSource } from '../../tensor-source.js';
import type { DecoderLinear, DecoderNorm } from './types.js';

/** Reads a decoder checkpoint's tensors under one prefix, biases optional, shapes checked. */
export class DecoderTensors {
  private readonly src: TensorSource;

  constructor(file: TensorFile, prefix: string) {
    this.src = new TensorSource(file, prefix);
  }

  has(name: string): boolean {
    return this.src.has(name);
  }

  read(name: string, shape: number[]): Float32Array {
    return this.src.read(name, shape);
  }

  /** torch.nn.Linear [out, in]; bias read when `bias` is true (missing → error) or 'optional'. */
  linear(name: string, outDim: number, inDim: number, bias: boolean | 'optional'): DecoderLinear {
    const withBias = bias === true || (bias === 'optional' && this.src.has(`${name}.bias`));
    return {
      weight: this.src.read(`${name}.weight`, [outDim, inDim]),
      bias: withBias ? this.src.read(`${name}.bias`, [outDim]) : null,
      outDim,
      inDim,
    };
  }

  /** GPT-2's Conv1D stores weight [in, out]; returned in Linear layout. */
  conv1d(name: string, outDim: number, inDim: number): DecoderLinear {
    const stored = this.src.read(`${name}.weight`, [inDim, outDim]);
    return { weight: transpose(stored, inDim, outDim), bias: this.src.read(`${name}.bias`, [outDim]), outDim, inDim };
  }

  rmsNorm(name: string, dim: number): DecoderNorm {
    return { gamma: this.src.read(`${name}.weight`, [dim]), beta: null };
  }

  layerNorm(name: string, dim: number): DecoderNorm {
    return { gamma: this.src.read(`${name}.weight`, [dim]), beta: this.src.read(`${name}.bias`, [dim]) };
  }
}

/** [rows, cols] → [cols, rows]. */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

/** Linears stacked along the output dim (q|k|v, gate|up). */
export function stackLinears(parts: DecoderLinear[]): DecoderLinear {
  const inDim = parts[0]!.inDim;
  const outDim = parts.reduce((n, p) => n + p.outDim, 0);
  const weight = new Float32Array(outDim * inDim);
  const anyBias = parts.some((p) => p.bias);
  const bias = anyBias ? new Float32Array(outDim) : null;
  let row = 0;
  for (const p of parts) {
    weight.set(p.weight, row * inDim);
    if (bias && p.bias) bias.set(p.bias, row);
    row += p.outDim;
  }
  return { weight, bias, outDim, inDim };
}

/** Rows of a Linear reordered: graph row r = stored row order[r]. */
export function permuteRows(l: DecoderLinear, order: Uint32Array): DecoderLinear {
  const weight = new Float32Array(l.weight.length);
  const bias = l.bias ? new Float32Array(l.outDim) : null;
  for (let r = 0; r < l.outDim; r++) {
    const from = order[r]!;
    weight.set(l.weight.subarray(from * l.inDim, (from + 1) * l.inDim), r * l.inDim);
    if (bias && l.bias) bias[r] = l.bias[from]!;
  }
  return { weight, bias, outDim: l.outDim, inDim: l.inDim };
}
