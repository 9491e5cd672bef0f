// Decoder architectures for random-weight causal LM checkpoints. Each is
// tiny but shaped to hit what real checkpoints of its family exercise:
// grouped-query attention, head sizes that are not powers of two, biased and
// tied projections, RoPE scaling in both config spellings, ALiBi with a head
// count that needs BLOOM's extra slopes. Units and meanings are those of the
// transformers config class named in `architectures`.

/** Llama-style decoders (RMSNorm, RoPE, SwiGLU): LlamaConfig / Qwen2Config / MistralConfig. */
export interface LlamaLikeArchitecture {
  family: 'llama' | 'qwen2' | 'mistral';
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  intermediateSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** config.json rope_scaling as written (null: plain RoPE). */
  ropeScaling: Readonly<Record<string, number | string>> | null;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (Qwen2 always; o_proj never). */
  qkvBias: boolean;
  maxPositionEmbeddings: number;
  /** Tokenizer size in all (BPE + special tokens) = vocab_size. */
  vocabSize: number;
}

/** GPT2Config (n_inner null means 4 * n_embd). */
export interface Gpt2Architecture {
  family: 'gpt2';
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nInner: number | null;
  nPositions: number;
  layerNormEpsilon: number;
  activationFunction: 'gelu_new';
  vocabSize: number;
}

/** BloomConfig (ALiBi positions, so no position limit in the config; MLP width 4 * hidden). */
export interface BloomArchitecture {
  family: 'bloom';
  hiddenSize: number;
  nLayer: number;
  nHead: number;
  layerNormEpsilon: number;
  /** tokenizer_config model_max_length only: BLOOM has no position table. */
  maxPositions: number;
  vocabSize: number;
}

export type DecoderArchitecture = LlamaLikeArchitecture | Gpt2Architecture | BloomArchitecture;

export type DecoderPresetName =
  | 'llama-tiny'
  | 'llama-tiny-gqa4'
  | 'qwen2-tiny'
  | 'mistral-tiny'
  | 'gpt2-tiny'
  | 'bloom-tiny'
  | 'llama-bench';

const TINY_VOCAB = 512;

const LLAMA_SHARED = {
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  tieWordEmbeddings: false,
  qkvBias: false,
  maxPositionEmbeddings: 512,
  vocabSize: TINY_VOCAB,
} as const;

export const DECODER_PRESETS: Readonly<Record<DecoderPresetName, Readonly<DecoderArchitecture>>> = {
  // GQA with 2 query heads per KV head.
  'llama-tiny': {
    ...LLAMA_SHARED,
    family: 'llama',
    hiddenSize: 72,
    numHiddenLayers: 3,
    numAttentionHeads: 6,
    numKeyValueHeads: 3,
    headDim: 12,
    intermediateSize: 100,
  },
  // 4 query heads per KV head, and Llama 3.1's frequency-dependent RoPE scaling
  // (its original context of 64 is inside the test sequences' reach).
  'llama-tiny-gqa4': {
    ...LLAMA_SHARED,
    family: 'llama',
    hiddenSize: 80,
    numHiddenLayers: 2,
    numAttentionHeads: 8,
    numKeyValueHeads: 2,
    headDim: 10,
    intermediateSize: 128,
    ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
  },
  // Head size 14 (even, as RoPE's rotate-half needs, but not a multiple of 4),
  // q/k/v biases, embeddings tied to the LM head.
  'qwen2-tiny': {
    ...LLAMA_SHARED,
    family: 'qwen2',
    hiddenSize: 56,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 4,
    headDim: 14,
    intermediateSize: 96,
    rmsNormEps: 1e-6,
    ropeTheta: 1000000,
    tieWordEmbeddings: true,
    qkvBias: true,
  },
  // Linear RoPE scaling in the legacy `type` spelling.
  'mistral-tiny': {
    ...LLAMA_SHARED,
    family: 'mistral',
    hiddenSize: 64,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 16,
    intermediateSize: 96,
    ropeScaling: { type: 'linear', factor: 2 },
  },
  // Head size 11; Conv1D weights stored [in, out].
  'gpt2-tiny': {
    family: 'gpt2',
    nEmbd: 66,
    nLayer: 2,
    nHead: 6,
    nInner: null,
    nPositions: 256,
    layerNormEpsilon: 1e-5,
    activationFunction: 'gelu_new',
    vocabSize: TINY_VOCAB,
  },
  // 6 heads: not a power of two, so ALiBi needs BLOOM's interleaved extra slopes.
  'bloom-tiny': {
    family: 'bloom',
    hiddenSize: 60,
    nLayer: 2,
    nHead: 6,
    layerNormEpsilon: 1e-5,
    maxPositions: 512,
    vocabSize: TINY_VOCAB,
  },
  // Large enough to time, small enough that lavapipe generates a few hundred
  // tokens in minutes (~4.3M parameters).
  'llama-bench': {
    ...LLAMA_SHARED,
    family: 'llama',
    hiddenSize: 256,
    numHiddenLayers: 4,
    numAttentionHeads: 8,
    numKeyValueHeads: 4,
    headDim: 32,
    intermediateSize: 688,
    maxPositionEmbeddings: 1024,
    vocabSize: 2000,
  },
};

export const DECODER_PRESET_NAMES: readonly DecoderPresetName[] = Object.keys(DECODER_PRESETS) as DecoderPresetName[];

export function isDecoderPresetName(name: string): name is DecoderPresetName {
  return Object.hasOwn(DECODER_PRESETS, name);
}
