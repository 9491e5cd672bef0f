// config.json of a Hugging Face causal decoder, read into the few numbers the
// float64 reference needs. Defaults are the config classes' own (LlamaConfig,
// MistralConfig, Qwen2Config, GPT2Config, BloomConfig), so a config.json that
// omits a key means what it means to transformers.
import type { RopeScaling } from './decoder-positions.js';

export type DecoderFamily = 'llama' | 'gpt2' | 'bloom';
export type DecoderActivation = 'silu' | 'gelu_tanh' | 'gelu_erf' | 'bloom_gelu';

export interface DecoderSpec {
  modelType: string;
  family: DecoderFamily;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  normEps: number;
  activation: DecoderActivation;
  tieWordEmbeddings: boolean;
  /** Rows of GPT-2's learned position table; null where positions are unbounded here. */
  maxPositions: number | null;
  /** Longest sequence the reference may run without modelling the sliding window; null: no window. */
  slidingWindow: number | null;
  rope: { theta: number; scaling: RopeScaling } | null;
  /** Llama family: which projections carry a bias. GPT-2 and BLOOM always have biases. */
  qkvBias: boolean;
  oBias: boolean;
  mlpBias: boolean;
  /** GPT-2: scores scaled by 1/√d (scale_attn_weights) and further by 1/(layer+1). */
  scaleAttnWeights: boolean;
  scaleAttnByInverseLayerIdx: boolean;
  /** BLOOM apply_residual_connection_post_layernorm: the residual is the normed input. */
  residualFromNormed: boolean;
  eosTokenIds: number[];
}

type Json = Record<string, unknown>;

function fail(message: string): never {
  throw new Error(`refDecoder config: ${message}`);
}

function positiveInt(raw: Json, keys: string[], fallback?: number): number {
  let value: unknown = fallback;
  for (const key of keys) {
    if (raw[key] !== undefined && raw[key] !== null) {
      value = raw[key];
      break;
    }
  }
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    fail(`${keys.join(' / ')} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

function positiveNumber(raw: Json, key: string, fallback: number): number {
  const value = raw[key] ?? fallback;
  if (typeof value !== 'number' || !(value > 0)) fail(`${key} must be a positive number, got ${JSON.stringify(value)}`);
  return value;
}

function bool(raw: Json, key: string, fallback: boolean): boolean {
  const value = raw[key] ?? fallback;
  if (typeof value !== 'boolean') fail(`${key} must be a boolean, got ${JSON.stringify(value)}`);
  return value;
}

function eosIds(raw: Json): number[] {
  const value = raw['eos_token_id'];
  if (value === undefined || value === null) return [];
  const list = Array.isArray(value) ? value : [value];
  if (!list.every((v) => Number.isInteger(v) && (v as number) >= 0)) fail(`bad eos_token_id ${JSON.stringify(value)}`);
  return list as number[];
}

/** rope_scaling (transformers ≤4) or rope_parameters (v5), with rope_theta inside or beside it. */
function parseRope(raw: Json): { theta: number; scaling: RopeScaling } {
  const params = (raw['rope_parameters'] ?? raw['rope_scaling'] ?? null) as Json | null;
  if (params !== null && (typeof params !== 'object' || Array.isArray(params))) fail('rope_scaling must be an object or null');
  const thetaRaw = params?.['rope_theta'] ?? raw['rope_theta'] ?? 10000;
  if (typeof thetaRaw !== 'number' || !(thetaRaw > 0)) fail(`rope_theta must be positive, got ${JSON.stringify(thetaRaw)}`);
  const partial = params?.['partial_rotary_factor'] ?? raw['partial_rotary_factor'] ?? 1;
  if (partial !== 1) fail(`partial_rotary_factor ${JSON.stringify(partial)} is not supported`);
  if (params === null) return { theta: thetaRaw, scaling: { kind: 'none' } };
  const type = params['rope_type'] ?? params['type'] ?? 'default';
  const num = (key: string): number => {
    const v = params[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(`rope_scaling.${key} must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  switch (type) {
    case 'default':
      return { theta: thetaRaw, scaling: { kind: 'none' } };
    case 'linear':
      return { theta: thetaRaw, scaling: { kind: 'linear', factor: num('factor') } };
    case 'llama3': {
      const scaling: RopeScaling = {
        kind: 'llama3',
        factor: num('factor'),
        lowFreqFactor: num('low_freq_factor'),
        highFreqFactor: num('high_freq_factor'),
        originalMaxPositions: num('original_max_position_embeddings'),
      };
      if (!(scaling.highFreqFactor > scaling.lowFreqFactor)) fail('llama3 rope needs high_freq_factor > low_freq_factor');
      return { theta: thetaRaw, scaling };
    }
    default:
      fail(`rope type ${JSON.stringify(type)} is not supported (only default, linear, llama3)`);
  }
}

function parseLlamaFamily(raw: Json, modelType: string): DecoderSpec {
  const hiddenSize = positiveInt(raw, ['hidden_size']);
  const numHeads = positiveInt(raw, ['num_attention_heads']);
  const numKvHeads = positiveInt(raw, ['num_key_value_heads'], numHeads);
  if (numHeads % numKvHeads !== 0) fail(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  if (raw['head_dim'] === undefined || raw['head_dim'] === null) {
    if (hiddenSize % numHeads !== 0) fail('hidden_size is not a multiple of num_attention_heads');
  }
  const headDim = positiveInt(raw, ['head_dim'], hiddenSize / numHeads);
  const act = raw['hidden_act'] ?? 'silu';
  if (act !== 'silu' && act !== 'swish') fail(`hidden_act ${JSON.stringify(act)} is not supported (only silu)`);
  const attentionBias = modelType === 'llama' && bool(raw, 'attention_bias', false);
  // Mistral's config class defaults sliding_window to 4096; Qwen2 uses it only with use_sliding_window.
  let slidingWindow: number | null = null;
  if (modelType === 'mistral') {
    slidingWindow = raw['sliding_window'] === null ? null : positiveInt(raw, ['sliding_window'], 4096);
  } else if (modelType === 'qwen2' && bool(raw, 'use_sliding_window', false)) {
    slidingWindow = raw['sliding_window'] === null ? null : positiveInt(raw, ['sliding_window'], 4096);
  }
  return {
    modelType,
    family: 'llama',
    vocabSize: positiveInt(raw, ['vocab_size']),
    hiddenSize,
    numLayers: positiveInt(raw, ['num_hidden_layers']),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: positiveInt(raw, ['intermediate_size']),
    normEps: positiveNumber(raw, 'rms_norm_eps', 1e-6),
    activation: 'silu',
    tieWordEmbeddings: bool(raw, 'tie_word_embeddings', false),
    maxPositions: null,
    slidingWindow,
    rope: parseRope(raw),
    qkvBias: modelType === 'qwen2' || attentionBias,
    oBias: attentionBias,
    mlpBias: modelType === 'llama' && bool(raw, 'mlp_bias', false),
    scaleAttnWeights: true,
    scaleAttnByInverseLayerIdx: false,
    residualFromNormed: false,
    eosTokenIds: eosIds(raw),
  };
}

function parseGpt2(raw: Json): DecoderSpec {
  const hiddenSize = positiveInt(raw, ['n_embd', 'hidden_size']);
  const numHeads = positiveInt(raw, ['n_head', 'num_attention_heads']);
  if (hiddenSize % numHeads !== 0) fail('n_embd is not a multiple of n_head');
  const act = raw['activation_function'] ?? 'gelu_new';
  let activation: DecoderActivation;
  if (act === 'gelu_new' || act === 'gelu_pytorch_tanh' || act === 'gelu_fast') activation = 'gelu_tanh';
  else if (act === 'gelu') activation = 'gelu_erf';
  else fail(`activation_function ${JSON.stringify(act)} is not supported`);
  return {
    modelType: 'gpt2',
    family: 'gpt2',
    vocabSize: positiveInt(raw, ['vocab_size'], 50257),
    hiddenSize,
    numLayers: positiveInt(raw, ['n_layer', 'num_hidden_layers']),
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    intermediateSize: positiveInt(raw, ['n_inner'], 4 * hiddenSize),
    normEps: positiveNumber(raw, 'layer_norm_epsilon', 1e-5),
    activation,
    tieWordEmbeddings: bool(raw, 'tie_word_embeddings', true),
    maxPositions: positiveInt(raw, ['n_positions', 'max_position_embeddings'], 1024),
    slidingWindow: null,
    rope: null,
    qkvBias: true,
    oBias: true,
    mlpBias: true,
    scaleAttnWeights: bool(raw, 'scale_attn_weights', true),
    scaleAttnByInverseLayerIdx: bool(raw, 'scale_attn_by_inverse_layer_idx', false),
    residualFromNormed: false,
    eosTokenIds: eosIds(raw),
  };
}

function parseBloom(raw: Json): DecoderSpec {
  const hiddenSize = positiveInt(raw, ['hidden_size', 'n_embed']);
  const numHeads = positiveInt(raw, ['n_head', 'num_attention_heads']);
  if (hiddenSize % numHeads !== 0) fail('hidden_size is not a multiple of n_head');
  return {
    modelType: 'bloom',
    family: 'bloom',
    vocabSize: positiveInt(raw, ['vocab_size'], 250880),
    hiddenSize,
    numLayers: positiveInt(raw, ['n_layer', 'num_hidden_layers']),
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    intermediateSize: 4 * hiddenSize,
    normEps: positiveNumber(raw, 'layer_norm_epsilon', 1e-5),
    activation: 'bloom_gelu',
    tieWordEmbeddings: bool(raw, 'tie_word_embeddings', true),
    maxPositions: null,
    slidingWindow: null,
    rope: null,
    qkvBias: true,
    oBias: true,
    mlpBias: true,
    scaleAttnWeights: true,
    scaleAttnByInverseLayerIdx: false,
    residualFromNormed: bool(raw, 'apply_residual_connection_post_layernorm', false),
    eosTokenIds: eosIds(raw),
  };
}

export function parseDecoderSpec(raw: Json): DecoderSpec {
  const modelType = raw['model_type'];
  switch (modelType) {
    case 'llama':
    case 'mistral':
    case 'qwen2':
      return parseLlamaFamily(raw, modelType);
    case 'gpt2':
      return parseGpt2(raw);
    case 'bloom':
      return parseBloom(raw);
    default:
      fail(`model_type ${JSON.stringify(modelType)} is not supported (llama, mistral, qwen2, gpt2, bloom)`);
  }
}
