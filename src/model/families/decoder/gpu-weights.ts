import { uploadStorage } from '../../../gpu/buffers.js';
import type { Dtype } from '../../../kernels/types.js';
import { f32ArrayToF16 } from '../../../util/f16.js';
import type { DecoderConfig, DecoderLinear, DecoderNorm, DecoderWeights, GpuDecoderLinear, GpuDecoderNorm, GpuDecoderWeights } from './types.js';

/**
 * Upload a decoder's canonical weights once, in the serving dtype. Position
 * tables (rotary inverse frequencies, ALiBi slopes) stay f32: they feed f32
 * angle and score arithmetic in the kernels.
 */
export function uploadDecoderWeights(device: GPUDevice, config: DecoderConfig, w: DecoderWeights, dtype: Dtype): GpuDecoderWeights {
  const buffers: GPUBuffer[] = [];
  let bytes = 0;
  const keep = (b: GPUBuffer): GPUBuffer => {
    buffers.push(b);
    bytes += b.size;
    return b;
  };
  const up = (data: Float32Array, label: string): GPUBuffer =>
    keep(uploadStorage(device, dtype === 'f16' ? f32ArrayToF16(data) : data, label));
  const linear = (l: DecoderLinear, label: string): GpuDecoderLinear => ({
    weight: up(l.weight, `${label}.weight`),
    bias: l.bias ? up(l.bias, `${label}.bias`) : null,
    outDim: l.outDim,
    inDim: l.inDim,
  });
  const norm = (n: DecoderNorm, label: string): GpuDecoderNorm => ({
    gamma: up(n.gamma, `${label}.weight`),
    beta: n.beta ? up(n.beta, `${label}.bias`) : null,
  });
  const embed = up(w.embed, 'embed');
  const pos = config.positions;
  const positionTable =
    pos.kind === 'rotary' ? keep(uploadStorage(device, pos.invFreq, 'rope.inv_freq')) : pos.kind === 'alibi' ? keep(uploadStorage(device, pos.slopes, 'alibi.slopes')) : null;
  return {
    dtype,
    embed,
    positionEmbed: w.positionEmbed ? up(w.positionEmbed, 'position_embed') : null,
    zeroRow: up(new Float32Array(config.hiddenSize), 'zero_row'),
    embedNorm: w.embedNorm ? norm(w.embedNorm, 'embed_norm') : null,
    layers: w.layers.map((l, i) => ({
      attnNorm: norm(l.attnNorm, `l${i}.attn_norm`),
      qkv: linear(l.qkv, `l${i}.qkv`),
      o: linear(l.o, `l${i}.o`),
      mlpNorm: norm(l.mlpNorm, `l${i}.mlp_norm`),
      up: linear(l.up, `l${i}.up`),
      down: linear(l.down, `l${i}.down`),
    })),
    finalNorm: norm(w.finalNorm, 'final_norm'),
    lmHead: w.lmHead ? up(w.lmHead, 'lm_head') : embed,
    positionTable,
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
