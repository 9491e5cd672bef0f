import type { TensorFile } from '../../tensor-source.js';
import type { DecoderConfig, DecoderLinearSite, DecoderWeights } from '../decoder/types.js';
import { DecoderTensors, permuteRows } from '../decoder/weights-common.js';

/**
 * BLOOM fuses query_key_value PER HEAD: stored output row h·3·d + part·d + i is
 * head h's q (part 0), k (1) or v (2) dimension i. The graph wants q | k | v
 * blocks, so graph row part·H + h·d + i reads that stored row.
 */
export function bloomQkvOrder(heads: number, headDim: number): Uint32Array {
  const H = heads * headDim;
  const order = new Uint32Array(3 * H);
  for (let part = 0; part < 3; part++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < headDim; i++) order[part * H + h * headDim + i] = h * 3 * headDim + part * headDim + i;
    }
  }
  return order;
}

/** BloomForCausalLM tensors (under `transformer.`, or bare for BloomModel checkpoints). */
export function loadBloomWeights(file: TensorFile, c: DecoderConfig): DecoderWeights {
  const prefix = file.has('transformer.word_embeddings.weight') ? 'transformer.' : '';
  const t = new DecoderTensors(file, prefix);
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const order = bloomQkvOrder(c.numAttentionHeads, c.headDim);
  const layers = [];
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `h.${i}`;
    layers.push({
      attnNorm: t.layerNorm(`${p}.input_layernorm`, H),
      qkv: permuteRows(t.linear(`${p}.self_attention.query_key_value`, 3 * H, H, true), order),
      o: t.linear(`${p}.self_attention.dense`, H, H, true),
      mlpNorm: t.layerNorm(`${p}.post_attention_layernorm`, H),
      up: t.linear(`${p}.mlp.dense_h_to_4h`, I, H, true),
      down: t.linear(`${p}.mlp.dense_4h_to_h`, H, I, true),
    });
  }
  const bare = new DecoderTensors(file, '');
  const lmHead = !c.tieWordEmbeddings && bare.has('lm_head.weight') ? bare.read('lm_head.weight', [c.vocabSize, H]) : null;
  return {
    embed: t.read('word_embeddings.weight', [c.vocabSize, H]),
    positionEmbed: null,
    embedNorm: t.layerNorm('word_embeddings_layernorm', H),
    layers,
    finalNorm: t.layerNorm('ln_f', H),
    lmHead,
  };
}

export function bloomLinearSites(c: DecoderConfig): DecoderLinearSite[] {
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const order = bloomQkvOrder(c.numAttentionHeads, c.headDim);
  const sites: DecoderLinearSite[] = [];
  for (let layer = 0; layer < c.numHiddenLayers; layer++) {
    const p = `transformer.h.${layer}`;
    sites.push(
      { module: `${p}.self_attention.query_key_value`, layer, gemm: 'qkv', colOffset: 0, outDim: 3 * H, inDim: H, storage: 'linear', bias: true, outRows: order },
      { module: `${p}.self_attention.dense`, layer, gemm: 'o', colOffset: 0, outDim: H, inDim: H, storage: 'linear', bias: true, outRows: null },
      { module: `${p}.mlp.dense_h_to_4h`, layer, gemm: 'up', colOffset: 0, outDim: I, inDim: H, storage: 'linear', bias: true, outRows: null },
      { module: `${p}.mlp.dense_4h_to_h`, layer, gemm: 'down', colOffset: 0, outDim: H, inDim: I, storage: 'linear', bias: true, outRows: null },
    );
  }
  return sites;
}
