import type { BatchEncoder } from '../../gpu/batch-encoder.js';
import type { ActivationArena } from '../../gpu/buffers.js';
import type { KernelChoices } from '../../kernels/types.js';
import type { Dtype } from '../../kernels/types.js';
import type { PetGraphInput } from '../pet-graph-input.js';
import type { SafetensorsFile } from '../safetensors.js';
import type { LayerNormWeights, LinearWeights } from '../tensor-source.js';

/**
 * An encoder model family: everything PetServe knows about one architecture
 * (BERT). Causal decoders (Llama, GPT-2, BLOOM) are DecoderFamily entries
 * (decoder/types.ts) sharing one step graph. The engine, the
 * PET layer and the CLI reach a model only through its family, picked from
 * config.json (families/index.ts). A family module is one file
 * (families/<name>.ts) with its parts under families/<name>/.
 */

/** Config keys every family has, in one spelling (the family's config adds its own). */
export interface ModelConfig {
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  /** Token-type (segment) vocabulary; 1 for families without segments. */
  typeVocabSize: number;
  /** Label names by class index when the checkpoint is a sequence classifier. */
  id2label: string[] | null;
}

/** Host weights of a checkpoint as its family groups them, plus its classifier width. */
export interface LoadedWeights<W> {
  weights: W;
  /** Classifier output count, 0 without a classifier. */
  numLabels: number;
}

/** The base model's weights on one device, in the serving dtype. */
export interface GpuModelWeights {
  dtype: Dtype;
  /** Bytes of GPU memory the base model holds. */
  bytes: number;
  destroy(): void;
}

/** Shape of one packed batch: `tokens` rows of `sequences` ragged sequences laid end to end. */
export interface PackedShape {
  tokens: number;
  sequences: number;
  /** Longest sequence (bounds attention's key count). */
  maxLength: number;
}

/** Activation buffers the engine fills and reads back around a recorded graph. */
export interface GraphBuffers {
  tokenTable: GPUBuffer; // u32 [tokens, 3]
  keyRange: GPUBuffer; // u32 [tokens, 2]
  clsRows: GPUBuffer; // u32 [sequences]
  /** [tokens, H] last hidden state after the graph. */
  hidden: GPUBuffer;
  /** [sequences, H] pooled output. */
  pooled: GPUBuffer;
  /** [logits elements] of all heads. */
  logits: GPUBuffer;
}

/** A GEMM of the graph: output width N, input width K (= the row stride of X), delta flag block width. */
export interface GemmShape {
  N: number;
  K: number;
  /** Width of one column block of the per-slot delta flags (one fused projection; N when not fused). */
  deltaBlock: number;
}

/** A linear layer a PET attaches to, as the checkpoint names it and as the graph executes it. */
export interface LinearSiteInfo<G extends string = string> {
  /** Hugging Face module path without the model prefix (`encoder.layer.3.attention.self.query`). */
  module: string;
  /** torch.nn.Linear layout: weight [outDim, inDim]. */
  outDim: number;
  inDim: number;
  /** The graph GEMM that computes it, and its first output column there (fused projections). */
  gemm: G;
  colOffset: number;
}

/**
 * The PET sites a family exposes. PET kinds address sites only through this
 * (never by a family's module names), so a kind works on every family that
 * has the sites it needs.
 */
export interface PetSiteTable<C extends ModelConfig, W, Linear extends string, Norm extends string, Gemm extends string> {
  /** Linear sites of one layer, in their stable order. */
  readonly linearSites: readonly Linear[];
  /** Per-layer LayerNorm sites. */
  readonly layerNormSites: readonly Norm[];
  /** Linear sites whose output an adapter may follow (before residual + norm). */
  readonly adapterSites: readonly Linear[];
  /** Linear sites whose input scaling folds into an existing kernel (IA³ input mode). */
  readonly inputScaleSites: readonly Linear[];
  /** Graph GEMMs of one layer (fused projections count once). */
  readonly layerGemms: readonly Gemm[];
  /** Module path of the embeddings' LayerNorm, the pooler, the classifier (null: none). */
  readonly embeddingsLayerNormModule: string | null;
  readonly poolerModule: string | null;
  readonly classifierModule: string | null;
  linear(config: C, layer: number, site: Linear): LinearSiteInfo<Gemm>;
  layerNormModule(layer: number, site: Norm): string;
  baseLinear(weights: W, layer: number, site: Linear): LinearWeights;
  baseLayerNorm(weights: W, layer: number, site: Norm): LayerNormWeights;
  gemmShape(config: C, gemm: Gemm | 'pooler'): GemmShape;
  /** Slot-table sites ([site][slot][SLOT_RECORD_WORDS]): how many, and where a (layer, site) is. */
  slotSiteCount(config: C): number;
  slotSiteIndex(config: C, layer: number, site: Gemm | Norm | 'pooler' | 'embeddings' | 'context'): number;
}

/** What the family computes at the end of the graph. */
export interface OutputHeads {
  /** Width of the pooled vector per sequence (input of classifiers and task heads). */
  pooledWidth: number;
  /** Outputs of the checkpoint's own classifier (0: none). */
  numLabels: number;
  /** Which row of a sequence the pooled vector comes from. */
  poolRow: 'first' | 'last';
}

export interface ModelFamily<
  C extends ModelConfig = ModelConfig,
  W = unknown,
  G extends GpuModelWeights = GpuModelWeights,
  B extends GraphBuffers = GraphBuffers,
  Linear extends string = string,
  Norm extends string = string,
  Gemm extends string = string,
> {
  /** Short name (`bert`), used in messages and docs. */
  readonly name: string;
  /** config.json `architectures` entries and `model_type` values this family loads. */
  readonly architectures: readonly string[];
  readonly modelTypes: readonly string[];
  /** config.json → typed config; CheckpointError naming `source` and the key. */
  parseConfig(raw: unknown, source: string): C;
  /** Read every base tensor by its checkpoint name, shapes checked. */
  loadWeights(file: SafetensorsFile, config: C): LoadedWeights<W>;
  uploadWeights(device: GPUDevice, weights: W, dtype: Dtype): G;
  readonly sites: PetSiteTable<C, W, Linear, Norm, Gemm>;
  heads(config: C, numLabels: number): OutputHeads;
  /** The graph over packed batches: its activation buffers and its recorded forward pass. */
  batchBuffers(arena: ActivationArena, config: C, dtype: Dtype, shape: PackedShape, logitsElems: number): B;
  recordForward(
    enc: BatchEncoder,
    config: C,
    weights: G,
    buffers: B,
    shape: PackedShape,
    kernels: KernelChoices,
    pet: PetGraphInput | null,
  ): void;
}
