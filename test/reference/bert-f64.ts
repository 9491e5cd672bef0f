// Float64 CPU reference of Hugging Face BertModel / BertForSequenceClassification
// in eval mode (dropout off). Each sequence runs on its own with no padding, so no
// attention mask is needed. Shares no code with src/: it is what the GPU model is
// checked against.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  refAdd,
  refAttentionPacked,
  refEmbedding,
  refGeluErf,
  refLayerNorm,
  refLinear,
  refTanh,
} from './ops-f64.js';
import { readSafetensorsF64 } from './safetensors-f64.js';
import type { RefTensor } from './safetensors-f64.js';

export interface RefBertConfig {
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  intermediateSize: number;
  hiddenAct: string;
  layerNormEps: number;
  maxPositionEmbeddings: number;
  typeVocabSize: number;
  vocabSize: number;
}

/**
 * A bottleneck adapter, PetS placement: applied to a dense layer's output before
 * the residual add and LayerNorm, h ← h + W_up·act(W_down·h + b_down) + b_up.
 */
export interface RefAdapter {
  bottleneck: number;
  activation: 'relu' | 'gelu';
  downWeight: Float64Array; // [bottleneck, hidden]
  downBias: Float64Array; // [bottleneck]
  upWeight: Float64Array; // [hidden, bottleneck]
  upBias: Float64Array; // [hidden]
}

export interface RefBert {
  config: RefBertConfig;
  /** Canonical names: no 'bert.' prefix, LayerNorm weight/bias spelling. */
  tensors: Map<string, RefTensor>;
  /** Rows of classifier.weight, or 0 when the checkpoint has no classifier. */
  numLabels: number;
  /**
   * Optional adapters (not mergeable into weights), keyed by the module whose dense
   * output they follow: 'encoder.layer.{i}.attention.output' (after
   * attention.output.dense) or 'encoder.layer.{i}.output' (after output.dense).
   */
  adapters?: Map<string, RefAdapter>;
  /** Names of the classifier rows, where the loader knows them. */
  id2label?: string[];
}

export interface RefBertOutput {
  lastHiddenState: number[][][]; // [seq][token][hidden]
  poolerOutput: number[][]; // [seq][hidden]
  logits: number[][] | null; // [seq][numLabels]
  /** As HF output_hidden_states: [0] embeddings after LayerNorm, [i+1] after layer i; each [seq][token][hidden]. */
  hiddenStates: number[][][][];
}

function requireInt(raw: Record<string, unknown>, key: string, fallback?: number): number {
  const value = raw[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new Error(`refBert config: ${key} must be a positive integer, got ${JSON.stringify(raw[key])}`);
  }
  return value;
}

function checkHiddenAct(act: string): void {
  // HF maps "gelu" to the exact erf GELU; "gelu_new"/"gelu_pytorch_tanh" are the
  // tanh approximation, which this reference deliberately does not implement.
  if (act !== 'gelu') throw new Error(`refBert: hidden_act ${JSON.stringify(act)} is not supported (only "gelu", the erf form)`);
}

export function parseRefBertConfig(raw: Record<string, unknown>): RefBertConfig {
  const hiddenAct = raw['hidden_act'] ?? 'gelu';
  if (typeof hiddenAct !== 'string') throw new Error('refBert config: hidden_act must be a string');
  checkHiddenAct(hiddenAct);
  const positionType = raw['position_embedding_type'] ?? 'absolute';
  if (positionType !== 'absolute') {
    throw new Error(`refBert: position_embedding_type ${JSON.stringify(positionType)} is not supported`);
  }
  const layerNormEps = raw['layer_norm_eps'] ?? 1e-12;
  if (typeof layerNormEps !== 'number' || !(layerNormEps > 0)) throw new Error('refBert config: bad layer_norm_eps');
  const config: RefBertConfig = {
    hiddenSize: requireInt(raw, 'hidden_size'),
    numHiddenLayers: requireInt(raw, 'num_hidden_layers'),
    numAttentionHeads: requireInt(raw, 'num_attention_heads'),
    intermediateSize: requireInt(raw, 'intermediate_size'),
    hiddenAct,
    layerNormEps,
    maxPositionEmbeddings: requireInt(raw, 'max_position_embeddings'),
    typeVocabSize: requireInt(raw, 'type_vocab_size', 2),
    vocabSize: requireInt(raw, 'vocab_size'),
  };
  if (config.hiddenSize % config.numAttentionHeads !== 0) {
    throw new Error('refBert config: hidden_size is not a multiple of num_attention_heads');
  }
  return config;
}

/** Maps a checkpoint name to the canonical one: drops 'bert.', renames LayerNorm gamma/beta. */
export function canonicalTensorName(name: string): string {
  let canonical = name.startsWith('bert.') ? name.slice('bert.'.length) : name;
  canonical = canonical.replace(/LayerNorm\.gamma$/, 'LayerNorm.weight').replace(/LayerNorm\.beta$/, 'LayerNorm.bias');
  return canonical;
}

function expectedShapes(config: RefBertConfig): Map<string, number[]> {
  const H = config.hiddenSize;
  const I = config.intermediateSize;
  const shapes = new Map<string, number[]>([
    ['embeddings.word_embeddings.weight', [config.vocabSize, H]],
    ['embeddings.position_embeddings.weight', [config.maxPositionEmbeddings, H]],
    ['embeddings.token_type_embeddings.weight', [config.typeVocabSize, H]],
    ['embeddings.LayerNorm.weight', [H]],
    ['embeddings.LayerNorm.bias', [H]],
    ['pooler.dense.weight', [H, H]],
    ['pooler.dense.bias', [H]],
  ]);
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const p = `encoder.layer.${i}.`;
    for (const proj of ['query', 'key', 'value']) {
      shapes.set(`${p}attention.self.${proj}.weight`, [H, H]);
      shapes.set(`${p}attention.self.${proj}.bias`, [H]);
    }
    shapes.set(`${p}attention.output.dense.weight`, [H, H]);
    shapes.set(`${p}attention.output.dense.bias`, [H]);
    shapes.set(`${p}attention.output.LayerNorm.weight`, [H]);
    shapes.set(`${p}attention.output.LayerNorm.bias`, [H]);
    shapes.set(`${p}intermediate.dense.weight`, [I, H]);
    shapes.set(`${p}intermediate.dense.bias`, [I]);
    shapes.set(`${p}output.dense.weight`, [H, I]);
    shapes.set(`${p}output.dense.bias`, [H]);
    shapes.set(`${p}output.LayerNorm.weight`, [H]);
    shapes.set(`${p}output.LayerNorm.bias`, [H]);
  }
  return shapes;
}

/** Builds a RefBert from an already parsed config.json object and checkpoint tensors. */
export function buildRefBert(rawConfig: Record<string, unknown>, checkpoint: Map<string, RefTensor>): RefBert {
  const config = parseRefBertConfig(rawConfig);
  const tensors = new Map<string, RefTensor>();
  for (const [name, tensor] of checkpoint) {
    const canonical = canonicalTensorName(name);
    if (tensors.has(canonical)) throw new Error(`refBert: tensors ${name} and another both map to ${canonical}`);
    tensors.set(canonical, tensor);
  }
  for (const [name, shape] of expectedShapes(config)) {
    const tensor = tensors.get(name);
    if (tensor === undefined) throw new Error(`refBert: checkpoint lacks ${name}`);
    if (JSON.stringify(tensor.shape) !== JSON.stringify(shape)) {
      throw new Error(`refBert: ${name} has shape ${JSON.stringify(tensor.shape)}, expected ${JSON.stringify(shape)}`);
    }
  }
  let numLabels = 0;
  const classifierWeight = tensors.get('classifier.weight');
  if (classifierWeight !== undefined) {
    const [rows, cols] = classifierWeight.shape;
    if (classifierWeight.shape.length !== 2 || rows === undefined || cols !== config.hiddenSize) {
      throw new Error(`refBert: classifier.weight has shape ${JSON.stringify(classifierWeight.shape)}`);
    }
    const classifierBias = tensors.get('classifier.bias');
    if (classifierBias === undefined || JSON.stringify(classifierBias.shape) !== JSON.stringify([rows])) {
      throw new Error('refBert: classifier.bias missing or of the wrong shape');
    }
    numLabels = rows;
  }
  return { config, tensors, numLabels };
}

/** Reads dir/config.json and dir/model.safetensors. */
export function loadRefBert(dir: string): RefBert {
  const rawConfig = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf-8')) as Record<string, unknown>;
  return buildRefBert(rawConfig, readSafetensorsF64(join(dir, 'model.safetensors')));
}

function weights(model: RefBert, name: string): Float64Array {
  const tensor = model.tensors.get(name);
  if (tensor === undefined) throw new Error(`refBert: missing tensor ${name}`);
  return tensor.data;
}

/** h ← h + W_up·act(W_down·h + b_down) + b_up for each of `rows` rows of h [rows, hidden]. */
export function refApplyAdapter(h: Float64Array, rows: number, hidden: number, adapter: RefAdapter): Float64Array {
  const m = adapter.bottleneck;
  const down = refLinear(h, rows, hidden, adapter.downWeight, adapter.downBias, m);
  const activated = adapter.activation === 'gelu' ? refGeluErf(down) : down.map((v) => Math.max(0, v));
  return refAdd(h, refLinear(activated, rows, m, adapter.upWeight, adapter.upBias, hidden));
}

const ADAPTER_KEY = /^encoder\.layer\.(\d+)\.(attention\.output|output)$/;

function checkAdapters(model: RefBert): void {
  for (const [key, adapter] of model.adapters ?? []) {
    const match = ADAPTER_KEY.exec(key);
    if (match === null || Number(match[1]) >= model.config.numHiddenLayers) {
      throw new Error(`refBertForward: adapter key ${JSON.stringify(key)} names no adapter site of this model`);
    }
    if (adapter.activation !== 'relu' && adapter.activation !== 'gelu') {
      throw new Error(`refBertForward: adapter ${key} has activation ${JSON.stringify(adapter.activation)}`);
    }
  }
}

function toRows(flat: Float64Array, rows: number, cols: number): number[][] {
  const out: number[][] = [];
  for (let r = 0; r < rows; r++) out.push(Array.from(flat.subarray(r * cols, (r + 1) * cols)));
  return out;
}

interface SequenceResult {
  hiddenStates: Float64Array[]; // embeddings output, then each layer's output, each [len, hidden]
  pooled: Float64Array;
  logits: Float64Array | null;
}

function forwardOneSequence(model: RefBert, ids: number[], types: number[] | null): SequenceResult {
  const { config } = model;
  const H = config.hiddenSize;
  const I = config.intermediateSize;
  const heads = config.numAttentionHeads;
  const headDim = H / heads;
  const eps = config.layerNormEps;
  const len = ids.length;
  if (len === 0) throw new Error('refBertForward: empty sequence');
  if (len > config.maxPositionEmbeddings) {
    throw new Error(`refBertForward: ${len} tokens exceed max_position_embeddings ${config.maxPositionEmbeddings}`);
  }
  const w = (name: string): Float64Array => weights(model, name);

  const embedded = refEmbedding(
    [ids],
    types === null ? null : [types],
    w('embeddings.word_embeddings.weight'),
    w('embeddings.position_embeddings.weight'),
    w('embeddings.token_type_embeddings.weight'),
    H,
  );
  let x = refLayerNorm(embedded, len, H, w('embeddings.LayerNorm.weight'), w('embeddings.LayerNorm.bias'), eps);
  const hiddenStates = [x];

  for (let i = 0; i < config.numHiddenLayers; i++) {
    const p = `encoder.layer.${i}.`;
    const q = refLinear(x, len, H, w(`${p}attention.self.query.weight`), w(`${p}attention.self.query.bias`), H);
    const k = refLinear(x, len, H, w(`${p}attention.self.key.weight`), w(`${p}attention.self.key.bias`), H);
    const v = refLinear(x, len, H, w(`${p}attention.self.value.weight`), w(`${p}attention.self.value.bias`), H);
    const context = refAttentionPacked(q, k, v, [len], heads, headDim);
    let attnProjected = refLinear(
      context,
      len,
      H,
      w(`${p}attention.output.dense.weight`),
      w(`${p}attention.output.dense.bias`),
      H,
    );
    const attnAdapter = model.adapters?.get(`${p}attention.output`);
    if (attnAdapter !== undefined) attnProjected = refApplyAdapter(attnProjected, len, H, attnAdapter);
    const attnOut = refLayerNorm(
      refAdd(attnProjected, x),
      len,
      H,
      w(`${p}attention.output.LayerNorm.weight`),
      w(`${p}attention.output.LayerNorm.bias`),
      eps,
    );
    const intermediate = refGeluErf(
      refLinear(attnOut, len, H, w(`${p}intermediate.dense.weight`), w(`${p}intermediate.dense.bias`), I),
    );
    let ffnOut = refLinear(intermediate, len, I, w(`${p}output.dense.weight`), w(`${p}output.dense.bias`), H);
    const ffnAdapter = model.adapters?.get(`${p}output`);
    if (ffnAdapter !== undefined) ffnOut = refApplyAdapter(ffnOut, len, H, ffnAdapter);
    x = refLayerNorm(refAdd(ffnOut, attnOut), len, H, w(`${p}output.LayerNorm.weight`), w(`${p}output.LayerNorm.bias`), eps);
    hiddenStates.push(x);
  }

  const firstToken = x.subarray(0, H);
  const pooled = refTanh(refLinear(firstToken, 1, H, w('pooler.dense.weight'), w('pooler.dense.bias'), H));
  const logits =
    model.numLabels > 0
      ? refLinear(pooled, 1, H, w('classifier.weight'), w('classifier.bias'), model.numLabels)
      : null;
  return { hiddenStates, pooled, logits };
}

/**
 * Runs every sequence independently through the model. tokenTypeIds defaults to
 * all zeros. logits is null when the checkpoint has no classifier.
 */
export function refBertForward(model: RefBert, inputIds: number[][], tokenTypeIds?: number[][]): RefBertOutput {
  checkHiddenAct(model.config.hiddenAct);
  checkAdapters(model);
  if (tokenTypeIds !== undefined && tokenTypeIds.length !== inputIds.length) {
    throw new Error('refBertForward: tokenTypeIds has a different number of sequences than inputIds');
  }
  const H = model.config.hiddenSize;
  const results = inputIds.map((ids, s) => forwardOneSequence(model, ids, tokenTypeIds?.[s] ?? null));
  const hiddenStates: number[][][][] = [];
  for (let layer = 0; layer <= model.config.numHiddenLayers; layer++) {
    hiddenStates.push(results.map((r, s) => toRows(r.hiddenStates[layer]!, inputIds[s]!.length, H)));
  }
  return {
    lastHiddenState: hiddenStates[model.config.numHiddenLayers]!,
    poolerOutput: results.map((r) => Array.from(r.pooled)),
    logits: model.numLabels > 0 ? results.map((r) => Array.from(r.logits!)) : null,
    hiddenStates,
  };
}
