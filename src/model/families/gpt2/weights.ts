import type { TensorFile } from '../../tensor-source.js';
import type { DecoderConfig, DecoderLinearSite, DecoderWeights } from '../decoder/types.js';
import { DecoderTensors } from '../decoder/weights-common.js';

/**
 * GPT2LMHeadModel tensors (under `transformer.`; hub checkpoints of GPT2Model
 * store them bare). Conv1D weights are stored [in, out] and are transposed to
 * Linear layout here; c_attn is already q|k|v along its output.
 */
export function loadGpt2Weights(file: TensorFile, c: DecoderConfig): DecoderWeights {
  const prefix = file.has('transformer.wte.weight') ? 'transformer.' : '';
  const t = new DecoderTensors(file, prefix);
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const layers = [];
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `h.${i}`;
    layers.push({
      attnNorm: t.layerNorm(`${p}.ln_1`, H),
      qkv: t.conv1d(`${p}.attn.c_attn`, 3 * H, H),
      o: t.conv1d(`${p}.attn.c_proj`, H, H),
      mlpNorm: t.layerNorm(`${p}.ln_2`, H),
      up: t.conv1d(`${p}.mlp.c_fc`, I, H),
      down: t.conv1d(`${p}.mlp.c_proj`, H, I),
    });
  }
  const bare = new DecoderTensors(file, '');
  const lmHead = !c.tieWordEmbeddings && bare.has('lm_head.weight') ? bare.read('lm_head.weight', [c.vocabSize, H]) : null;
  return {
    embed: t.read('wte.weight', [c.vocabSize, H]),
    positionEmbed: t.read('wpe.weight', [c.maxPositionEmbeddings, H]),
    embedNorm: null,
    layers,
    finalNorm: t.layerNorm('ln_f', H),
    lmHead,
  };
}

export function gpt2LinearSites(c: DecoderConfig): DecoderLinearSite[] {
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const sites: DecoderLinearSite[] = [];
  for (let layer = 0; layer < c.numHiddenLayers; layer++) {
    const p = `transformer.h.${layer}`;
    sites.push(
      { module: `${p}.attn.c_attn`, layer, gemm: 'qkv', colOffset: 0, outDim: 3 * H, inDim: H, storage: 'conv1d', bias: true, outRows: null },
      { module: `${p}.attn.c_proj`, layer, gemm: 'o', colOffset: 0, outDim: H, inDim: H, storage: 'conv1d', bias: true, outRows: null },
      { module: `${p}.mlp.c_fc`, layer, gemm: 'up', colOffset: 0, outDim: I, inDim: H, storage: 'conv1d', bias: true, outRows: null },
      { module: `${p}.mlp.c_proj`, layer, gemm: 'down', colOffset: 0, outDim: H, inDim: I, storage: 'conv1d', bias: true, outRows: null },
    );
  }
  return sites;
}
