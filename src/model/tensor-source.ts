import { CheckpointError } from '../util/errors.js';
import type { TensorInfo } from './safetensors.js';

/** What TensorSource reads from: one safetensors file or a sharded checkpoint. */
export interface TensorFile {
  readonly path: string;
  has(name: string): boolean;
  info(name: string): TensorInfo | undefined;
  readFloat32(name: string): Float32Array;
}

/** One linear layer as torch.nn.Linear stores it: weight [out, in], bias [out]. */
export interface LinearWeights {
  weight: Float32Array;
  bias: Float32Array;
  outDim: number;
  inDim: number;
}

export interface LayerNormWeights {
  gamma: Float32Array;
  beta: Float32Array;
}

/**
 * Reads named tensors of a checkpoint as f32 with their shapes checked. A
 * family gives the model prefix its checkpoints may store names under and the
 * other spellings a name may have (old TF-converted BERTs say gamma/beta).
 */
export class TensorSource {
  constructor(
    private readonly file: TensorFile,
    private readonly prefix: string,
    private readonly aliases: (name: string) => string[] = () => [],
  ) {}

  private resolve(name: string): string | undefined {
    const candidates = [this.prefix + name, name, ...this.aliases(name).map((a) => this.prefix + a)];
    return candidates.find((c) => this.file.has(c));
  }

  has(name: string): boolean {
    return this.resolve(name) !== undefined;
  }

  /** Read `name` as f32, checking its shape; errors name the tensor and both shapes. */
  read(name: string, shape: number[]): Float32Array {
    const stored = this.resolve(name);
    if (stored === undefined) {
      throw new CheckpointError(
        `${this.file.path}: missing tensor '${this.prefix}${name}' (expected shape [${shape.join(', ')}])`,
      );
    }
    const info = this.file.info(stored)!;
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(
        `${this.file.path}: tensor '${stored}' has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}]`,
      );
    }
    if (!['F32', 'F16', 'BF16'].includes(info.dtype)) {
      throw new CheckpointError(`${this.file.path}: tensor '${stored}' has dtype ${info.dtype}, expected F32/F16/BF16`);
    }
    const data = this.file.readFloat32(stored);
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!)) {
        throw new CheckpointError(`${this.file.path}: tensor '${stored}' contains a non-finite value at index ${i}`);
      }
    }
    return data;
  }

  linear(name: string, outDim: number, inDim: number): LinearWeights {
    return {
      weight: this.read(`${name}.weight`, [outDim, inDim]),
      bias: this.read(`${name}.bias`, [outDim]),
      outDim,
      inDim,
    };
  }

  layerNorm(name: string, dim: number): LayerNormWeights {
    return { gamma: this.read(`${name}.weight`, [dim]), beta: this.read(`${name}.bias`, [dim]) };
  }
}
