import { uploadStorage } from '../../../gpu/buffers.js';
import type { Dtype } from '../../../kernels/types.js';
import { f32ArrayToF16 } from '../../../util/f16.js';
import type { LayerNormWeights, LinearWeights } from '../../tensor-source.js';
import type { GpuModelWeights } from '../types.js';
import type { BertWeights } from './weights.js';

export interface GpuLinear {
  weight: GPUBuffer;
  bias: GPUBuffer;
  outDim: number;
  inDim: number;
}
export interface GpuLayerNorm {
  gamma: GPUBuffer;
  beta: GPUBuffer;
}
export interface GpuEncoderLayer {
  /** query | key | value fused along the output dim: one [3H, H] GEMM instead of three. */
  qkv: GpuLinear;
  attentionOutput: GpuLinear;
  attentionLayerNorm: GpuLayerNorm;
  intermediate: GpuLinear;
  output: GpuLinear;
  outputLayerNorm: GpuLayerNorm;
}
export interface GpuBertWeights extends GpuModelWeights {
  wordEmbeddings: GPUBuffer;
  positionEmbeddings: GPUBuffer;
  tokenTypeEmbeddings: GPUBuffer;
  embeddingLayerNorm: GpuLayerNorm;
  layers: GpuEncoderLayer[];
  pooler: GpuLinear;
  classifier: GpuLinear | null;
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Upload the base model once, in the serving dtype. */
export function uploadBertWeights(device: GPUDevice, w: BertWeights, dtype: Dtype): GpuBertWeights {
  const buffers: GPUBuffer[] = [];
  let bytes = 0;
  const up = (data: Float32Array, label: string): GPUBuffer => {
    const b = uploadStorage(device, dtype === 'f16' ? f32ArrayToF16(data) : data, label);
    buffers.push(b);
    bytes += b.size;
    return b;
  };
  const linear = (l: LinearWeights, label: string): GpuLinear => ({
    weight: up(l.weight, `${label}.weight`),
    bias: up(l.bias, `${label}.bias`),
    outDim: l.outDim,
    inDim: l.inDim,
  });
  const layerNorm = (l: LayerNormWeights, label: string): GpuLayerNorm => ({
    gamma: up(l.gamma, `${label}.gamma`),
    beta: up(l.beta, `${label}.beta`),
  });
  const layers = w.layers.map((l, i): GpuEncoderLayer => {
    const p = `layer${i}`;
    return {
      qkv: linear(
        {
          weight: concat([l.query.weight, l.key.weight, l.value.weight]),
          bias: concat([l.query.bias, l.key.bias, l.value.bias]),
          outDim: 3 * l.query.outDim,
          inDim: l.query.inDim,
        },
        `${p}.qkv`,
      ),
      attentionOutput: linear(l.attentionOutput, `${p}.attention.output`),
      attentionLayerNorm: layerNorm(l.attentionLayerNorm, `${p}.attention.ln`),
      intermediate: linear(l.intermediate, `${p}.intermediate`),
      output: linear(l.output, `${p}.output`),
      outputLayerNorm: layerNorm(l.outputLayerNorm, `${p}.output.ln`),
    };
  });
  return {
    dtype,
    wordEmbeddings: up(w.wordEmbeddings, 'word_embeddings'),
    positionEmbeddings: up(w.positionEmbeddings, 'position_embeddings'),
    tokenTypeEmbeddings: up(w.tokenTypeEmbeddings, 'token_type_embeddings'),
    embeddingLayerNorm: layerNorm(w.embeddingLayerNorm, 'embeddings.ln'),
    layers,
    pooler: linear(w.pooler, 'pooler'),
    classifier: w.classifier ? linear(w.classifier, 'classifier') : null,
    get bytes() {
      return bytes;
    },
    destroy() {
      for (const b of buffers) b.destroy();
      buffers.length = 0;
      bytes = 0;
    },
  };
}
