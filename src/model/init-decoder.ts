// Random-weight causal LM checkpoints (Llama, Qwen2, Mistral, GPT-2, BLOOM)
// laid out as transformers' save_pretrained writes them: config.json,
// generation_config.json, model.safetensors, plus a byte-level BPE
// tokenizer.json and tokenizer_config.json with a ChatML chat template.
// Weights are deterministic given the seed.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { buildDecoderTokenizer, decoderTokenizerJson, DECODER_SPECIAL_TOKENS, MIN_DECODER_VOCAB_SIZE } from './byte-bpe.js';
import type { DecoderSpecialToken, DecoderTokenizer } from './byte-bpe.js';
import { DECODER_PRESETS, isDecoderPresetName } from './decoder-presets.js';
import type { BloomArchitecture, DecoderArchitecture, DecoderPresetName, Gpt2Architecture, LlamaLikeArchitecture } from './decoder-presets.js';
import {
  elementCount,
  generateNormalTensors,
  InitModelOptionsError,
  SAFETENSORS_DTYPES,
  TORCH_DTYPE_NAMES,
  TRANSFORMERS_VERSION,
  type CheckpointDtype,
} from './init-model.js';
import { writeSafetensors } from './safetensors.js';

export interface InitDecoderOptions {
  preset: DecoderPresetName;
  outDir: string;
  seed?: number;
  dtype?: CheckpointDtype;
  /** Tokenizer size in all (BPE + special tokens), = config vocab_size; must be reachable by the built-in corpus. */
  vocabSize?: number;
  /** Overrides max_position_embeddings / n_positions (BLOOM: tokenizer model_max_length only). */
  maxPositions?: number;
  onProgress?: (phase: 'generate' | 'write', tensorsDone: number, tensorsTotal: number) => void;
}

export interface InitDecoderResult {
  configPath: string;
  generationConfigPath: string;
  weightsPath: string;
  tokenizerPath: string;
  tokenizerConfigPath: string;
  parameterCount: number;
  architecture: DecoderArchitecture;
  vocabSize: number;
  specialTokenIds: Readonly<Record<DecoderSpecialToken, number>>;
  bosTokenId: number;
  eosTokenId: number;
}

// How a tensor's values are drawn. Linear weights have std gain/sqrt(fan_in)
// rather than HF's flat 0.02, so that what the blocks write outweighs the
// token's own embedding in the residual stream: otherwise a tied LM head
// predicts the current token again and greedy decoding repeats one token
// forever (measured with test/model/decoder-forward-f64.ts; gain 1 still
// collapsed GPT-2 and BLOOM, 2 does not). Embeddings at 1/sqrt(hidden) give
// logits of std ~1 through a tied head. BLOOM's embedding LayerNorm brings the
// token back to unit scale, so its gain starts small. Biases and norm
// parameters sit away from 0 / 1 so that a kernel that drops a bias or a norm
// weight is visibly wrong.
type DecoderTensorInit = 'embedding' | 'positionEmbedding' | 'linear' | 'bias' | 'normWeight' | 'normBias' | 'embeddingNormWeight';

export interface DecoderTensorSpec {
  name: string;
  shape: number[];
  init: DecoderTensorInit;
  /** Input features of a linear weight (Conv1D stores [in, out], Linear [out, in]). */
  fanIn?: number;
}

const LINEAR_GAIN = 2;
const EMBEDDING_NORM_GAIN = 0.2;
const BIAS_STD = 0.1;
const NORM_SPREAD = 0.05;
const POSITION_EMBEDDING_SCALE = 0.5;

/** The architecture a preset names, with the caller's overrides applied and checked. */
export function resolveDecoderArchitecture(
  preset: DecoderPresetName,
  overrides: { vocabSize?: number; maxPositions?: number } = {},
): DecoderArchitecture {
  if (!isDecoderPresetName(preset)) throw new InitModelOptionsError(`unknown decoder preset ${JSON.stringify(preset)}`);
  const architecture: DecoderArchitecture = { ...DECODER_PRESETS[preset] };
  const { vocabSize, maxPositions } = overrides;
  if (vocabSize !== undefined) {
    if (!Number.isSafeInteger(vocabSize) || vocabSize < MIN_DECODER_VOCAB_SIZE) {
      throw new InitModelOptionsError(
        `vocabSize must be an integer >= ${MIN_DECODER_VOCAB_SIZE} (256 byte symbols + ${DECODER_SPECIAL_TOKENS.length} special tokens), got ${vocabSize}`,
      );
    }
    architecture.vocabSize = vocabSize;
  }
  if (maxPositions !== undefined) {
    if (!Number.isSafeInteger(maxPositions) || maxPositions < 1) {
      throw new InitModelOptionsError(`maxPositions must be a positive integer, got ${maxPositions}`);
    }
    if (architecture.family === 'gpt2') architecture.nPositions = maxPositions;
    else if (architecture.family === 'bloom') architecture.maxPositions = maxPositions;
    else architecture.maxPositionEmbeddings = maxPositions;
  }
  return architecture;
}

export async function initDecoderModel(opts: InitDecoderOptions): Promise<InitDecoderResult> {
  const { seed = 0, dtype = 'f32' } = opts;
  if (!Number.isSafeInteger(seed)) throw new InitModelOptionsError(`seed must be an integer, got ${seed}`);
  if (!Object.hasOwn(SAFETENSORS_DTYPES, dtype)) {
    throw new InitModelOptionsError(`dtype must be f32, f16 or bf16, got ${JSON.stringify(dtype)}`);
  }
  const architecture = resolveDecoderArchitecture(opts.preset, opts);
  const tokenizer = buildDecoderTokenizer(architecture.vocabSize);
  if (tokenizer.vocabSize !== architecture.vocabSize) {
    throw new InitModelOptionsError(
      `vocabSize ${architecture.vocabSize} is more than the built-in BPE corpus yields (${tokenizer.vocabSize} tokens at most)`,
    );
  }
  const special = familyTokens(architecture, tokenizer);

  await mkdir(opts.outDir, { recursive: true });
  const paths = {
    configPath: join(opts.outDir, 'config.json'),
    generationConfigPath: join(opts.outDir, 'generation_config.json'),
    weightsPath: join(opts.outDir, 'model.safetensors'),
    tokenizerPath: join(opts.outDir, 'tokenizer.json'),
    tokenizerConfigPath: join(opts.outDir, 'tokenizer_config.json'),
  };

  const layout = decoderTensorLayout(architecture);
  const counter = (phase: 'generate' | 'write'): (() => void) => {
    let done = 0;
    return () => opts.onProgress?.(phase, ++done, layout.length);
  };
  const embeddingStd = 1 / Math.sqrt(decoderHiddenSize(architecture));
  const tensors = generateNormalTensors(layout, seed, SAFETENSORS_DTYPES[dtype], counter('generate'), (spec) => decoderNormal(spec, embeddingStd));
  await writeSafetensors(paths.weightsPath, tensors, { format: 'pt' }, counter('write'));

  await writeJson(paths.configPath, sortKeysDeep(decoderConfigJson(architecture, special, dtype)));
  await writeJson(
    paths.generationConfigPath,
    sortKeysDeep({ bos_token_id: special.bosId, eos_token_id: special.generationEosIds, transformers_version: TRANSFORMERS_VERSION }),
  );
  await writeJson(paths.tokenizerPath, decoderTokenizerJson(tokenizer, special.prependedBos));
  await writeJson(paths.tokenizerConfigPath, sortKeysDeep(decoderTokenizerConfigJson(architecture, tokenizer, special)));

  const parameterCount = layout.reduce((sum, spec) => sum + elementCount(spec.shape), 0);
  return {
    ...paths,
    parameterCount,
    architecture,
    vocabSize: tokenizer.vocabSize,
    specialTokenIds: tokenizer.specialTokenIds,
    bosTokenId: special.bosId,
    eosTokenId: special.eosId,
  };
}

// ------------------------------------------------------------------ special tokens

interface FamilyTokens {
  bos: DecoderSpecialToken;
  eos: DecoderSpecialToken;
  bosId: number;
  eosId: number;
  /** generation_config eos_token_id: the config's eos first, then the other end marker. */
  generationEosIds: number[];
  /** The token the post-processor prepends, null for none. */
  prependedBos: DecoderSpecialToken | null;
}

// Llama-style presets are chat models: `<s>` starts every encoding and a turn
// ends with `<|im_end|>`. GPT-2 and BLOOM keep GPT-2's single
// `<|endoftext|>` for both and prepend nothing. Both stop on either marker.
function familyTokens(architecture: DecoderArchitecture, tokenizer: DecoderTokenizer): FamilyTokens {
  const ids = tokenizer.specialTokenIds;
  const llamaLike = architecture.family !== 'gpt2' && architecture.family !== 'bloom';
  const bos: DecoderSpecialToken = llamaLike ? '<s>' : '<|endoftext|>';
  const eos: DecoderSpecialToken = llamaLike ? '<|im_end|>' : '<|endoftext|>';
  const otherEnd: DecoderSpecialToken = llamaLike ? '<|endoftext|>' : '<|im_end|>';
  return {
    bos,
    eos,
    bosId: ids[bos],
    eosId: ids[eos],
    generationEosIds: [ids[eos], ids[otherEnd]],
    prependedBos: llamaLike ? bos : null,
  };
}

// ------------------------------------------------------------------ weights

/** Every tensor of the checkpoint, with transformers' names and shapes, in state_dict order. */
export function decoderTensorLayout(architecture: DecoderArchitecture): DecoderTensorSpec[] {
  switch (architecture.family) {
    case 'llama':
    case 'qwen2':
    case 'mistral':
      return llamaLikeLayout(architecture);
    case 'gpt2':
      return gpt2Layout(architecture);
    case 'bloom':
      return bloomLayout(architecture);
  }
}

/** LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM: `model.` prefix, torch.nn.Linear [out, in]. */
function llamaLikeLayout(a: LlamaLikeArchitecture): DecoderTensorSpec[] {
  const h = a.hiddenSize;
  const qWidth = a.numAttentionHeads * a.headDim;
  const kvWidth = a.numKeyValueHeads * a.headDim;
  const specs: DecoderTensorSpec[] = [{ name: 'model.embed_tokens.weight', shape: [a.vocabSize, h], init: 'embedding' }];
  const linear = (name: string, outFeatures: number, inFeatures: number, bias: boolean): void => {
    specs.push({ name: `${name}.weight`, shape: [outFeatures, inFeatures], init: 'linear', fanIn: inFeatures });
    if (bias) specs.push({ name: `${name}.bias`, shape: [outFeatures], init: 'bias' });
  };
  for (let layer = 0; layer < a.numHiddenLayers; layer++) {
    const p = `model.layers.${layer}`;
    linear(`${p}.self_attn.q_proj`, qWidth, h, a.qkvBias);
    linear(`${p}.self_attn.k_proj`, kvWidth, h, a.qkvBias);
    linear(`${p}.self_attn.v_proj`, kvWidth, h, a.qkvBias);
    linear(`${p}.self_attn.o_proj`, h, qWidth, false);
    linear(`${p}.mlp.gate_proj`, a.intermediateSize, h, false);
    linear(`${p}.mlp.up_proj`, a.intermediateSize, h, false);
    linear(`${p}.mlp.down_proj`, h, a.intermediateSize, false);
    specs.push({ name: `${p}.input_layernorm.weight`, shape: [h], init: 'normWeight' });
    specs.push({ name: `${p}.post_attention_layernorm.weight`, shape: [h], init: 'normWeight' });
  }
  specs.push({ name: 'model.norm.weight', shape: [h], init: 'normWeight' });
  // A tied head is the embedding itself; save_pretrained drops the duplicate.
  if (!a.tieWordEmbeddings) linear('lm_head', a.vocabSize, h, false);
  return specs;
}

/**
 * GPT2LMHeadModel as the hub's GPT-2 checkpoints store it: the transformer's
 * names without a `transformer.` prefix, Conv1D weights [in, out], no
 * lm_head (tied to wte), no attention-mask buffers.
 */
function gpt2Layout(a: Gpt2Architecture): DecoderTensorSpec[] {
  const e = a.nEmbd;
  const inner = a.nInner ?? 4 * e;
  const specs: DecoderTensorSpec[] = [
    { name: 'wte.weight', shape: [a.vocabSize, e], init: 'embedding' },
    { name: 'wpe.weight', shape: [a.nPositions, e], init: 'positionEmbedding' },
  ];
  const conv1d = (name: string, inFeatures: number, outFeatures: number): void => {
    specs.push({ name: `${name}.weight`, shape: [inFeatures, outFeatures], init: 'linear', fanIn: inFeatures });
    specs.push({ name: `${name}.bias`, shape: [outFeatures], init: 'bias' });
  };
  const layerNorm = (name: string): void => {
    specs.push({ name: `${name}.weight`, shape: [e], init: 'normWeight' });
    specs.push({ name: `${name}.bias`, shape: [e], init: 'normBias' });
  };
  for (let layer = 0; layer < a.nLayer; layer++) {
    const p = `h.${layer}`;
    layerNorm(`${p}.ln_1`);
    conv1d(`${p}.attn.c_attn`, e, 3 * e);
    conv1d(`${p}.attn.c_proj`, e, e);
    layerNorm(`${p}.ln_2`);
    conv1d(`${p}.mlp.c_fc`, e, inner);
    conv1d(`${p}.mlp.c_proj`, inner, e);
  }
  layerNorm('ln_f');
  return specs;
}

/**
 * BloomForCausalLM as the hub's BLOOM checkpoints store it: unprefixed, Linear
 * [out, in], query_key_value rows interleaved per head ([head][q|k|v][head_dim]),
 * no lm_head (tied to word_embeddings).
 */
function bloomLayout(a: BloomArchitecture): DecoderTensorSpec[] {
  const h = a.hiddenSize;
  const specs: DecoderTensorSpec[] = [{ name: 'word_embeddings.weight', shape: [a.vocabSize, h], init: 'embedding' }];
  const linear = (name: string, outFeatures: number, inFeatures: number): void => {
    specs.push({ name: `${name}.weight`, shape: [outFeatures, inFeatures], init: 'linear', fanIn: inFeatures });
    specs.push({ name: `${name}.bias`, shape: [outFeatures], init: 'bias' });
  };
  const layerNorm = (name: string): void => {
    specs.push({ name: `${name}.weight`, shape: [h], init: 'normWeight' });
    specs.push({ name: `${name}.bias`, shape: [h], init: 'normBias' });
  };
  specs.push({ name: 'word_embeddings_layernorm.weight', shape: [h], init: 'embeddingNormWeight' });
  specs.push({ name: 'word_embeddings_layernorm.bias', shape: [h], init: 'normBias' });
  for (let layer = 0; layer < a.nLayer; layer++) {
    const p = `h.${layer}`;
    layerNorm(`${p}.input_layernorm`);
    linear(`${p}.self_attention.query_key_value`, 3 * h, h);
    linear(`${p}.self_attention.dense`, h, h);
    layerNorm(`${p}.post_attention_layernorm`);
    linear(`${p}.mlp.dense_h_to_4h`, 4 * h, h);
    linear(`${p}.mlp.dense_4h_to_h`, h, 4 * h);
  }
  layerNorm('ln_f');
  return specs;
}

export function decoderHiddenSize(architecture: DecoderArchitecture): number {
  return architecture.family === 'gpt2' ? architecture.nEmbd : architecture.hiddenSize;
}

/** Each tensor's (mean, std); see DecoderTensorInit for why these scales. */
function decoderNormal(spec: DecoderTensorSpec, embeddingStd: number): readonly [number, number] {
  switch (spec.init) {
    case 'embedding':
      return [0, embeddingStd];
    case 'positionEmbedding':
      return [0, POSITION_EMBEDDING_SCALE * embeddingStd];
    case 'linear':
      return [0, LINEAR_GAIN / Math.sqrt(spec.fanIn!)];
    case 'bias':
      return [0, BIAS_STD];
    case 'normWeight':
      return [1, NORM_SPREAD];
    case 'normBias':
      return [0, NORM_SPREAD];
    case 'embeddingNormWeight':
      return [EMBEDDING_NORM_GAIN, NORM_SPREAD];
  }
}

// ------------------------------------------------------------------ config.json

const ARCHITECTURE_CLASS: Readonly<Record<DecoderArchitecture['family'], string>> = {
  llama: 'LlamaForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  mistral: 'MistralForCausalLM',
  gpt2: 'GPT2LMHeadModel',
  bloom: 'BloomForCausalLM',
};

/** config.json with the keys each config class's save_pretrained writes (sorted by the caller). */
export function decoderConfigJson(
  architecture: DecoderArchitecture,
  special: { bosId: number; eosId: number },
  dtype: CheckpointDtype,
): Record<string, unknown> {
  const common = {
    architectures: [ARCHITECTURE_CLASS[architecture.family]],
    bos_token_id: special.bosId,
    eos_token_id: special.eosId,
    initializer_range: 0.02,
    model_type: architecture.family,
    torch_dtype: TORCH_DTYPE_NAMES[dtype],
    transformers_version: TRANSFORMERS_VERSION,
    use_cache: true,
    vocab_size: architecture.vocabSize,
  };
  switch (architecture.family) {
    case 'llama':
    case 'qwen2':
    case 'mistral':
      return { ...common, ...llamaLikeConfigKeys(architecture) };
    case 'gpt2':
      return {
        ...common,
        activation_function: architecture.activationFunction,
        attn_pdrop: 0.1,
        embd_pdrop: 0.1,
        layer_norm_epsilon: architecture.layerNormEpsilon,
        n_embd: architecture.nEmbd,
        n_head: architecture.nHead,
        n_inner: architecture.nInner,
        n_layer: architecture.nLayer,
        n_positions: architecture.nPositions,
        reorder_and_upcast_attn: false,
        resid_pdrop: 0.1,
        scale_attn_by_inverse_layer_idx: false,
        scale_attn_weights: true,
        summary_activation: null,
        summary_first_dropout: 0.1,
        summary_proj_to_labels: true,
        summary_type: 'cls_index',
        summary_use_proj: true,
      };
    case 'bloom':
      return {
        ...common,
        apply_residual_connection_post_layernorm: false,
        attention_dropout: 0.0,
        hidden_dropout: 0.0,
        hidden_size: architecture.hiddenSize,
        layer_norm_epsilon: architecture.layerNormEpsilon,
        n_head: architecture.nHead,
        n_layer: architecture.nLayer,
        pretraining_tp: 1,
        slow_but_exact: false,
      };
  }
}

function llamaLikeConfigKeys(a: LlamaLikeArchitecture): Record<string, unknown> {
  const shared = {
    attention_dropout: 0.0,
    hidden_act: 'silu',
    hidden_size: a.hiddenSize,
    intermediate_size: a.intermediateSize,
    max_position_embeddings: a.maxPositionEmbeddings,
    num_attention_heads: a.numAttentionHeads,
    num_hidden_layers: a.numHiddenLayers,
    num_key_value_heads: a.numKeyValueHeads,
    rms_norm_eps: a.rmsNormEps,
    rope_scaling: a.ropeScaling === null ? null : { ...a.ropeScaling },
    rope_theta: a.ropeTheta,
    tie_word_embeddings: a.tieWordEmbeddings,
  };
  switch (a.family) {
    case 'llama':
      return { ...shared, attention_bias: a.qkvBias, head_dim: a.headDim, mlp_bias: false, pretraining_tp: 1 };
    case 'mistral':
      return { ...shared, head_dim: a.headDim, sliding_window: null };
    case 'qwen2':
      // Qwen2Config has no head_dim: it is hidden_size / num_attention_heads.
      return { ...shared, max_window_layers: a.numHiddenLayers, sliding_window: a.maxPositionEmbeddings, use_sliding_window: false };
  }
}

// ------------------------------------------------------------------ tokenizer_config.json

// ChatML, as Qwen2's templates spell it: each message as
// <|im_start|>role\ncontent<|im_end|>\n, then the assistant's opening when asked.
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

function decoderTokenizerConfigJson(
  architecture: DecoderArchitecture,
  tokenizer: DecoderTokenizer,
  special: FamilyTokens,
): Record<string, unknown> {
  const maxLength =
    architecture.family === 'gpt2'
      ? architecture.nPositions
      : architecture.family === 'bloom'
        ? architecture.maxPositions
        : architecture.maxPositionEmbeddings;
  const config: Record<string, unknown> = {
    added_tokens_decoder: Object.fromEntries(
      DECODER_SPECIAL_TOKENS.map((token) => [
        String(tokenizer.specialTokenIds[token]),
        { content: token, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
      ]),
    ),
    bos_token: special.bos,
    chat_template: CHATML_TEMPLATE,
    // Byte-level decoding is exact; the cleanup would turn " ." into ".".
    clean_up_tokenization_spaces: false,
    eos_token: special.eos,
    model_max_length: maxLength,
  };
  switch (architecture.family) {
    case 'gpt2':
      return { ...config, add_prefix_space: false, errors: 'replace', tokenizer_class: 'GPT2Tokenizer', unk_token: special.eos };
    case 'bloom':
      return { ...config, add_prefix_space: false, tokenizer_class: 'BloomTokenizer', unk_token: special.eos };
    default:
      return { ...config, tokenizer_class: 'PreTrainedTokenizerFast' };
  }
}

// ------------------------------------------------------------------ json

/** transformers writes config, generation and tokenizer configs with json.dumps(sort_keys=True). */
function sortKeysDeep(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeysDeep);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => [k, sortKeysDeep(v)]),
  );
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(path, JSON.stringify(value, null, 2) + '\n');
}
