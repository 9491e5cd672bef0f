import type { TensorFile } from '../../tensor-source.js';
import { DecoderTensors, stackLinears } from '../decoder/weights-common.js';
import type { DecoderLinearSite, DecoderWeights } from '../decoder/types.js';
import type { LlamaConfig } from './config.js';

/** LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM tensor names (`model.` prefix, `lm_head` bare). */
export function loadLlamaWeights(file: TensorFile, c: LlamaConfig): DecoderWeights {
  const t = new DecoderTensors(file, '');
  const H = c.hiddenSize;
  const q = c.numAttentionHeads * c.headDim;
  const kv = c.numKeyValueHeads * c.headDim;
  const I = c.intermediateSize;
  const layers = [];
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `model.layers.${i}`;
    layers.push({
      attnNorm: t.rmsNorm(`${p}.input_layernorm`, H),
      qkv: stackLinears([
        t.linear(`${p}.self_attn.q_proj`, q, H, c.qkvBias),
        t.linear(`${p}.self_attn.k_proj`, kv, H, c.qkvBias),
        t.linear(`${p}.self_attn.v_proj`, kv, H, c.qkvBias),
      ]),
      o: t.linear(`${p}.self_attn.o_proj`, H, q, c.oBias),
      mlpNorm: t.rmsNorm(`${p}.post_attention_layernorm`, H),
      up: stackLinears([t.linear(`${p}.mlp.gate_proj`, I, H, c.mlpBias), t.linear(`${p}.mlp.up_proj`, I, H, c.mlpBias)]),
      down: t.linear(`${p}.mlp.down_proj`, H, I, c.mlpBias),
    });
  }
  const embed = t.read('model.embed_tokens.weight', [c.vocabSize, H]);
  // Tied checkpoints usually omit lm_head; one that stores it anyway is read as untied.
  const lmHead = !c.tieWordEmbeddings || t.has('lm_head.weight') ? t.read('lm_head.weight', [c.vocabSize, H]) : null;
  return { embed, positionEmbed: null, embedNorm: null, layers, finalNorm: t.rmsNorm('model.norm', H), lmHead };
}

export function llamaLinearSites(c: LlamaConfig): DecoderLinearSite[] {
  const H = c.hiddenSize;
  const q = c.numAttentionHeads * c.headDim;
  const kv = c.numKeyValueHeads * c.headDim;
  const I = c.intermediateSize;
  const sites: DecoderLinearSite[] = [];
  for (let layer = 0; layer < c.numHiddenLayers; layer++) {
    const p = `model.layers.${layer}`;
    const site = (module: string, gemm: DecoderLinearSite['gemm'], colOffset: number, outDim: number, inDim: number, bias: boolean): void => {
      sites.push({ module: `${p}.${module}`, layer, gemm, colOffset, outDim, inDim, storage: 'linear', bias, outRows: null });
    };
    site('self_attn.q_proj', 'qkv', 0, q, H, c.qkvBias);
    site('self_attn.k_proj', 'qkv', q, kv, H, c.qkvBias);
    site('self_attn.v_proj', 'qkv', q + kv, kv, H, c.qkvBias);
    site('self_attn.o_proj', 'o', 0, H, q, c.oBias);
    site('mlp.gate_proj', 'up', 0, I, H, c.mlpBias);
    site('mlp.up_proj', 'up', I, I, H, c.mlpBias);
    site('mlp.down_proj', 'down', 0, H, I, c.mlpBias);
  }
  return sites;
}
