// The three decoder families brought to one pre-norm block, so a single forward
// serves them all:
//   n = norm₁(x); r = residualFromNormed ? n : x; h = r + o(attn(q(n), k(n), v(n)))
//   n = norm₂(h); r = residualFromNormed ? n : h; x = r + down(mlp(n))
// Every projection becomes an nn.Linear-style [out, in] matrix here: GPT-2's
// Conv1D weights are transposed and its fused c_attn split into q | k | v along
// the output; BLOOM's fused query_key_value is split per head ([heads, 3, d]).
// Every checkpoint tensor must be consumed, so a misnamed one fails loudly.
import type { DecoderSpec } from './decoder-config.js';
import { alibiSlopes, ropeInvFreq } from './decoder-positions.js';
import type { RefTensor } from './safetensors-f64.js';

export interface Linear {
  weight: Float64Array; // [outDim, inDim]
  bias: Float64Array | null;
  outDim: number;
  inDim: number;
}

export interface Norm {
  kind: 'rms' | 'layer';
  weight: Float64Array;
  bias: Float64Array | null;
}

export interface DecoderLayer {
  inputNorm: Norm;
  q: Linear;
  k: Linear;
  v: Linear;
  o: Linear;
  postNorm: Norm;
  /** SwiGLU gate (Llama family); null for the plain GELU MLP. */
  gate: Linear | null;
  up: Linear;
  down: Linear;
  attentionScale: number;
}

export interface DecoderWeights {
  spec: DecoderSpec;
  embed: Float64Array; // [vocab, hidden]
  positionTable: Float64Array | null; // GPT-2 wpe [maxPositions, hidden]
  embedNorm: Norm | null; // BLOOM word_embeddings_layernorm
  invFreq: Float64Array | null;
  alibi: Float64Array | null;
  layers: DecoderLayer[];
  finalNorm: Norm;
  lmHead: Float64Array; // [vocab, hidden]
}

class TensorTaker {
  private readonly left: Set<string>;
  constructor(private readonly tensors: Map<string, RefTensor>) {
    this.left = new Set(tensors.keys());
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  take(name: string, shape: number[]): Float64Array {
    const tensor = this.tensors.get(name);
    if (tensor === undefined) throw new Error(`refDecoder: checkpoint lacks ${name}`);
    if (JSON.stringify(tensor.shape) !== JSON.stringify(shape)) {
      throw new Error(`refDecoder: ${name} has shape ${JSON.stringify(tensor.shape)}, expected ${JSON.stringify(shape)}`);
    }
    this.left.delete(name);
    return tensor.data;
  }

  linear(module: string, outDim: number, inDim: number, hasBias: boolean): Linear {
    const weight = this.take(`${module}.weight`, [outDim, inDim]);
    if (!hasBias && this.has(`${module}.bias`)) throw new Error(`refDecoder: ${module}.bias is present but the config says no bias`);
    return { weight, bias: hasBias ? this.take(`${module}.bias`, [outDim]) : null, outDim, inDim };
  }

  /** A GPT-2 Conv1D ([in, out] weight), transposed to [out, in]. */
  conv1d(module: string, inDim: number, outDim: number): Linear {
    const stored = this.take(`${module}.weight`, [inDim, outDim]);
    const weight = new Float64Array(outDim * inDim);
    for (let i = 0; i < inDim; i++) for (let o = 0; o < outDim; o++) weight[o * inDim + i] = stored[i * outDim + o]!;
    return { weight, bias: this.take(`${module}.bias`, [outDim]), outDim, inDim };
  }

  norm(module: string, kind: Norm['kind'], dim: number): Norm {
    const weight = this.take(`${module}.weight`, [dim]);
    if (kind === 'rms' && this.has(`${module}.bias`)) throw new Error(`refDecoder: RMSNorm ${module} has a bias`);
    return { kind, weight, bias: kind === 'layer' ? this.take(`${module}.bias`, [dim]) : null };
  }

  refuseLeftovers(): void {
    const [first] = this.left;
    if (first !== undefined) throw new Error(`refDecoder: checkpoint tensor ${first} is not part of this model`);
  }
}

/** The given output rows of a linear (weight rows and bias entries), as a linear of its own. */
function rowsOf(linear: Linear, rows: number[]): Linear {
  const { inDim } = linear;
  const weight = new Float64Array(rows.length * inDim);
  const bias = linear.bias === null ? null : new Float64Array(rows.length);
  rows.forEach((row, r) => {
    weight.set(linear.weight.subarray(row * inDim, (row + 1) * inDim), r * inDim);
    if (bias !== null) bias[r] = linear.bias![row]!;
  });
  return { weight, bias, outDim: rows.length, inDim };
}

const range = (start: number, count: number): number[] => Array.from({ length: count }, (_, i) => start + i);

function lmHeadOf(spec: DecoderSpec, take: TensorTaker, embed: Float64Array): Float64Array {
  const shape = [spec.vocabSize, spec.hiddenSize];
  if (take.has('lm_head.weight')) return take.take('lm_head.weight', shape);
  if (!spec.tieWordEmbeddings) throw new Error('refDecoder: checkpoint lacks lm_head.weight and tie_word_embeddings is false');
  return embed;
}

function buildLlama(spec: DecoderSpec, take: TensorTaker): DecoderWeights {
  const H = spec.hiddenSize;
  const qDim = spec.numHeads * spec.headDim;
  const kvDim = spec.numKvHeads * spec.headDim;
  const I = spec.intermediateSize;
  const embed = take.take('model.embed_tokens.weight', [spec.vocabSize, H]);
  const layers: DecoderLayer[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    const p = `model.layers.${i}.`;
    layers.push({
      inputNorm: take.norm(`${p}input_layernorm`, 'rms', H),
      q: take.linear(`${p}self_attn.q_proj`, qDim, H, spec.qkvBias),
      k: take.linear(`${p}self_attn.k_proj`, kvDim, H, spec.qkvBias),
      v: take.linear(`${p}self_attn.v_proj`, kvDim, H, spec.qkvBias),
      o: take.linear(`${p}self_attn.o_proj`, H, qDim, spec.oBias),
      postNorm: take.norm(`${p}post_attention_layernorm`, 'rms', H),
      gate: take.linear(`${p}mlp.gate_proj`, I, H, spec.mlpBias),
      up: take.linear(`${p}mlp.up_proj`, I, H, spec.mlpBias),
      down: take.linear(`${p}mlp.down_proj`, H, I, spec.mlpBias),
      attentionScale: 1 / Math.sqrt(spec.headDim),
    });
  }
  const finalNorm = take.norm('model.norm', 'rms', H);
  const rope = spec.rope!;
  return {
    spec,
    embed,
    positionTable: null,
    embedNorm: null,
    invFreq: ropeInvFreq(spec.headDim, rope.theta, rope.scaling),
    alibi: null,
    layers,
    finalNorm,
    lmHead: lmHeadOf(spec, take, embed),
  };
}

function buildGpt2(spec: DecoderSpec, take: TensorTaker): DecoderWeights {
  const H = spec.hiddenSize;
  const I = spec.intermediateSize;
  const embed = take.take('transformer.wte.weight', [spec.vocabSize, H]);
  const positionTable = take.take('transformer.wpe.weight', [spec.maxPositions!, H]);
  const layers: DecoderLayer[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    const p = `transformer.h.${i}.`;
    const qkv = take.conv1d(`${p}attn.c_attn`, H, 3 * H);
    let scale = spec.scaleAttnWeights ? 1 / Math.sqrt(spec.headDim) : 1;
    if (spec.scaleAttnByInverseLayerIdx) scale /= i + 1;
    layers.push({
      inputNorm: take.norm(`${p}ln_1`, 'layer', H),
      q: rowsOf(qkv, range(0, H)),
      k: rowsOf(qkv, range(H, H)),
      v: rowsOf(qkv, range(2 * H, H)),
      o: take.conv1d(`${p}attn.c_proj`, H, H),
      postNorm: take.norm(`${p}ln_2`, 'layer', H),
      gate: null,
      up: take.conv1d(`${p}mlp.c_fc`, H, I),
      down: take.conv1d(`${p}mlp.c_proj`, I, H),
      attentionScale: scale,
    });
  }
  const finalNorm = take.norm('transformer.ln_f', 'layer', H);
  return {
    spec,
    embed,
    positionTable,
    embedNorm: null,
    invFreq: null,
    alibi: null,
    layers,
    finalNorm,
    lmHead: lmHeadOf(spec, take, embed),
  };
}

function buildBloom(spec: DecoderSpec, take: TensorTaker): DecoderWeights {
  const H = spec.hiddenSize;
  const d = spec.headDim;
  const embed = take.take('transformer.word_embeddings.weight', [spec.vocabSize, H]);
  const embedNorm = take.norm('transformer.word_embeddings_layernorm', 'layer', H);
  // fused_qkv.view(…, num_heads, 3, head_dim): head h's q, k, v rows are consecutive blocks of d.
  const perHead = (which: number): number[] =>
    range(0, spec.numHeads).flatMap((h) => range((3 * h + which) * d, d));
  const layers: DecoderLayer[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    const p = `transformer.h.${i}.`;
    const qkv = take.linear(`${p}self_attention.query_key_value`, 3 * H, H, true);
    layers.push({
      inputNorm: take.norm(`${p}input_layernorm`, 'layer', H),
      q: rowsOf(qkv, perHead(0)),
      k: rowsOf(qkv, perHead(1)),
      v: rowsOf(qkv, perHead(2)),
      o: take.linear(`${p}self_attention.dense`, H, H, true),
      postNorm: take.norm(`${p}post_attention_layernorm`, 'layer', H),
      gate: null,
      up: take.linear(`${p}mlp.dense_h_to_4h`, 4 * H, H, true),
      down: take.linear(`${p}mlp.dense_4h_to_h`, H, 4 * H, true),
      attentionScale: 1 / Math.sqrt(d),
    });
  }
  const finalNorm = take.norm('transformer.ln_f', 'layer', H);
  return {
    spec,
    embed,
    positionTable: null,
    embedNorm,
    invFreq: null,
    alibi: alibiSlopes(spec.numHeads),
    layers,
    finalNorm,
    lmHead: lmHeadOf(spec, take, embed),
  };
}

/** Normalises canonical-named checkpoint tensors (see decoder-checkpoint) into one block layout. */
export function buildDecoderWeights(spec: DecoderSpec, tensors: Map<string, RefTensor>): DecoderWeights {
  const take = new TensorTaker(tensors);
  const weights =
    spec.family === 'llama' ? buildLlama(spec, take) : spec.family === 'gpt2' ? buildGpt2(spec, take) : buildBloom(spec, take);
  take.refuseLeftovers();
  return weights;
}
