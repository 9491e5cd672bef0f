import type { BatchEncoder } from '../../../gpu/batch-encoder.js';
import type { Dtype } from '../../../kernels/types.js';
import type { TensorFile } from '../../tensor-source.js';
import type { GpuModelWeights, ModelConfig } from '../types.js';

/**
 * What every causal decoder family (Llama, GPT-2, BLOOM) reduces to: a
 * canonical config, canonical host weights and a table of the linear modules a
 * PEFT adapter may target. Families differ only in how their checkpoints spell
 * and lay out those tensors (GPT-2's transposed Conv1D weights, BLOOM's
 * per-head fused query_key_value); the step graph (graph.ts) is shared.
 */

/** How positions enter attention. */
export type PositionEncoding =
  | { kind: 'learned' }
  /** inverse frequencies already scaled by rope_scaling (host-computed, f32 on the GPU). */
  | { kind: 'rotary'; invFreq: Float32Array; rotaryDims: number }
  | { kind: 'alibi'; slopes: Float32Array };

export interface DecoderConfig extends ModelConfig {
  /** config.json model_type after family matching (llama, qwen2, mistral, gpt2, bloom). */
  modelType: string;
  numKeyValueHeads: number;
  headDim: number;
  norm: 'rms' | 'layer';
  normEps: number;
  /** swiglu: gate|up fused, silu(gate)·up; gelu_tanh: one fc with GPT-2's gelu_new. */
  mlp: 'swiglu' | 'gelu_tanh';
  positions: PositionEncoding;
  /** BLOOM: LayerNorm right after the word embeddings. */
  embeddingLayerNorm: boolean;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

export interface DecoderNorm {
  gamma: Float32Array;
  /** null for RMSNorm. */
  beta: Float32Array | null;
}

/** torch.nn.Linear layout ([outDim, inDim]); bias null when the checkpoint has none. */
export interface DecoderLinear {
  weight: Float32Array;
  bias: Float32Array | null;
  outDim: number;
  inDim: number;
}

export interface DecoderLayerWeights {
  attnNorm: DecoderNorm;
  /** q | k | v rows fused in that order: [(heads + 2·kvHeads)·headDim, hidden]. */
  qkv: DecoderLinear;
  o: DecoderLinear;
  mlpNorm: DecoderNorm;
  /** swiglu: gate | up fused [2·I, H]; gelu_tanh: fc [I, H]. */
  up: DecoderLinear;
  down: DecoderLinear;
}

export interface DecoderWeights {
  embed: Float32Array;
  /** Learned position table [maxPositions, H] (GPT-2), else null. */
  positionEmbed: Float32Array | null;
  embedNorm: DecoderNorm | null;
  layers: DecoderLayerWeights[];
  finalNorm: DecoderNorm;
  /** [V, H], null when tied to `embed`. */
  lmHead: Float32Array | null;
}

/** The graph GEMMs of one layer, and the two outside layers adapters may touch. */
export type DecoderGemm = 'qkv' | 'o' | 'up' | 'down';

/**
 * A linear module a PEFT adapter can target, as the checkpoint names it and as
 * the graph executes it. Adapter matrices are in torch.nn.Linear orientation
 * (lora_B·lora_A is [outDim, inDim]) whatever the checkpoint stores.
 */
export interface DecoderLinearSite {
  /** Module path under the model (`model.layers.3.self_attn.q_proj`), as PEFT keys name it after `base_model.model.`. */
  module: string;
  layer: number;
  gemm: DecoderGemm;
  /** First output column of this module inside the fused GEMM output. */
  colOffset: number;
  outDim: number;
  inDim: number;
  /** How the checkpoint stores the weight: torch.nn.Linear [out, in] or GPT-2's Conv1D [in, out] (PEFT then sets fan_in_fan_out). */
  storage: 'linear' | 'conv1d';
  /** Whether the module has a bias. */
  bias: boolean;
  /**
   * Row order of a fused module whose checkpoint layout differs from the graph's
   * (BLOOM's per-head q,k,v): graph row r takes checkpoint row outRows[r]. null = identity.
   */
  outRows: Uint32Array | null;
}

/** The vocabulary-sized modules (modules_to_save / LoRA on the head). */
export interface DecoderVocabModules {
  embed: string;
  lmHead: string;
}

/** A torch.nn.Embedding of the model (token, learned positions): `num` rows of `dim`. */
export interface DecoderEmbeddingModule {
  module: string;
  num: number;
  dim: number;
}

export interface GpuDecoderLinear {
  weight: GPUBuffer;
  bias: GPUBuffer | null;
  outDim: number;
  inDim: number;
}
export interface GpuDecoderNorm {
  gamma: GPUBuffer;
  beta: GPUBuffer | null;
}
export interface GpuDecoderWeights extends GpuModelWeights {
  embed: GPUBuffer;
  positionEmbed: GPUBuffer | null;
  /** One zero row: the token-type table embeddingSum wants for learned positions. */
  zeroRow: GPUBuffer;
  embedNorm: GpuDecoderNorm | null;
  layers: { attnNorm: GpuDecoderNorm; qkv: GpuDecoderLinear; o: GpuDecoderLinear; mlpNorm: GpuDecoderNorm; up: GpuDecoderLinear; down: GpuDecoderLinear }[];
  finalNorm: GpuDecoderNorm;
  /** The embedding buffer itself when tied. */
  lmHead: GPUBuffer;
  /** f32 inverse frequencies (rotary) or slopes (ALiBi), else null. */
  positionTable: GPUBuffer | null;
}

export interface DecoderFamily<C extends DecoderConfig = DecoderConfig> {
  readonly kind: 'decoder';
  readonly name: string;
  readonly architectures: readonly string[];
  readonly modelTypes: readonly string[];
  parseConfig(raw: unknown, source: string): C;
  /** Every base tensor read by its checkpoint name, shapes checked, turned canonical. */
  loadWeights(file: TensorFile, config: C): DecoderWeights;
  /** Every adapter-targetable linear module of every layer. */
  linearSites(config: C): DecoderLinearSite[];
  readonly vocabModules: DecoderVocabModules;
  /** The embedding modules (token embedding first, then learned positions if any). */
  embeddingModules(config: C): DecoderEmbeddingModule[];
  /** PEFT's default LoRA target_modules for this model type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING). */
  readonly defaultLoraTargets: readonly string[];
}

/** Paged KV cache of one model on one device: per layer a K and a V buffer of [slots, kvWidth]. */
export interface GpuKvCache {
  k: GPUBuffer[];
  v: GPUBuffer[];
  numBlocks: number;
  blockTokens: number;
  dtype: Dtype;
  bytes: number;
  destroy(): void;
}

/** Shape of one step: `tokens` rows of `sequences` sequences, logits for `logitRows` of them. */
export interface StepShape {
  tokens: number;
  sequences: number;
  logitRows: number;
  maxBlocksPerSeq: number;
}

/** Buffers the engine fills before recording a step. */
export interface StepBuffers {
  tokenIds: GPUBuffer; // u32 [tokens]
  /** u32 [tokens, 3] (id, position, 0) for learned positions. */
  tokenTable: GPUBuffer;
  positions: GPUBuffer; // u32 [tokens]
  slotMapping: GPUBuffer; // u32 [tokens]
  rowInfo: GPUBuffer; // u32 [tokens, 2]
  blockTables: GPUBuffer; // u32 [sequences, maxBlocksPerSeq]
  logitRows: GPUBuffer; // u32 [logitRows]
  logits: GPUBuffer; // [logitRows, V]
}

export type RecordStep = (enc: BatchEncoder) => void;
