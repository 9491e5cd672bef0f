// Float64 CPU reference of Hugging Face causal decoders (LlamaForCausalLM,
// MistralForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel, BloomForCausalLM) in eval
// mode, optionally with a PEFT LoRA adapter merged into the weights. Shares no code
// with src/: it is what the GPU engine's logits and greedy decodes are checked against.
//
// Two deliberately separate paths compute the same logits: forward() runs the whole
// sequence at once with a causal mask and no cache; the KV-cache session
// (forwardIncremental, greedy) runs one token at a time against cached keys and
// values. The tests hold them to each other.
import { join } from 'node:path';
import { EMBED_MODULE, readDecoderCheckpoint, readJsonObject } from './decoder-checkpoint.js';
import { parseDecoderSpec } from './decoder-config.js';
import type { DecoderActivation, DecoderSpec } from './decoder-config.js';
import { buildDecoderWeights } from './decoder-graph.js';
import type { DecoderLayer, DecoderWeights, Linear, Norm } from './decoder-graph.js';
import { isIa3Adapter, mergePeftIa3 } from './decoder-ia3.js';
import { mergePeftLora } from './decoder-lora.js';
import { applyRope } from './decoder-positions.js';
import { refGeluErf, refLayerNorm, refLinear } from './ops-f64.js';
import type { RefTensor } from './safetensors-f64.js';

export interface RefDecoder {
  readonly modelType: string; // 'llama' | 'qwen2' | 'mistral' | 'gpt2' | 'bloom'
  readonly vocabSize: number;
  readonly spec: DecoderSpec;
  /** eos_token_id of config.json (a list where the config has one); greedy() does not use it unless passed. */
  readonly eosTokenIds: readonly number[];
  /** Logits (float64) of every position of `ids` run as one sequence from position 0: [ids.length * vocabSize]. No cache. */
  forward(ids: readonly number[]): Float64Array;
  /** The same logits computed one token at a time through the KV cache. */
  forwardIncremental(ids: readonly number[]): Float64Array;
  /** Greedy decode (argmax, lowest id on ties) through the KV cache, stopping after any id in eosIds; only the new ids. */
  greedy(prompt: readonly number[], maxNewTokens: number, eosIds?: readonly number[]): number[];
}

// ---------------------------------------------------------------------------
// Row operations

function activate(kind: DecoderActivation, v: number): number {
  switch (kind) {
    case 'silu':
      return v / (1 + Math.exp(-v));
    case 'gelu_tanh': // HF gelu_new / gelu_pytorch_tanh
      return 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));
    case 'gelu_erf':
      return refGeluErf(v);
    case 'bloom_gelu': // bloom_gelu_forward, with its truncated √(2/π)
      return v * 0.5 * (1 + Math.tanh(0.79788456 * v * (1 + 0.044715 * v * v)));
  }
}

/** LlamaRMSNorm: x / √(mean(x²) + ε) · w (no mean subtraction, no bias). */
function rmsNorm(x: Float64Array, rows: number, dim: number, weight: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let sumSquares = 0;
    for (let i = 0; i < dim; i++) sumSquares += x[r * dim + i]! ** 2;
    const inv = 1 / Math.sqrt(sumSquares / dim + eps);
    for (let i = 0; i < dim; i++) y[r * dim + i] = x[r * dim + i]! * inv * weight[i]!;
  }
  return y;
}

function norm(x: Float64Array, rows: number, dim: number, n: Norm, eps: number): Float64Array {
  return n.kind === 'rms' ? rmsNorm(x, rows, dim, n.weight, eps) : refLayerNorm(x, rows, dim, n.weight, n.bias!, eps);
}

const linear = (x: Float64Array, rows: number, l: Linear): Float64Array =>
  refLinear(x, rows, l.inDim, l.weight, l.bias, l.outDim);

function addInto(a: Float64Array, b: Float64Array): Float64Array {
  for (let i = 0; i < a.length; i++) a[i] = a[i]! + b[i]!;
  return a;
}

function mlp(w: DecoderWeights, layer: DecoderLayer, x: Float64Array, rows: number): Float64Array {
  const act = w.spec.activation;
  const up = linear(x, rows, layer.up);
  if (layer.gate !== null) {
    const gate = linear(x, rows, layer.gate);
    for (let i = 0; i < up.length; i++) up[i] = activate(act, gate[i]!) * up[i]!;
  } else {
    for (let i = 0; i < up.length; i++) up[i] = activate(act, up[i]!);
  }
  return linear(up, rows, layer.down);
}

/** Token (+ learned position) embeddings of `ids` at positions start.., then BLOOM's embedding LayerNorm. */
function embed(w: DecoderWeights, ids: readonly number[], start: number): Float64Array {
  const H = w.spec.hiddenSize;
  const x = new Float64Array(ids.length * H);
  ids.forEach((id, t) => {
    x.set(w.embed.subarray(id * H, (id + 1) * H), t * H);
    if (w.positionTable !== null) {
      for (let i = 0; i < H; i++) x[t * H + i] = x[t * H + i]! + w.positionTable[(start + t) * H + i]!;
    }
  });
  return w.embedNorm === null ? x : norm(x, ids.length, H, w.embedNorm, w.spec.normEps);
}

/** Rotates every head of rows [0, rows) of a [rows, heads·d] projection, row t at position start + t. */
function rotate(w: DecoderWeights, x: Float64Array, rows: number, heads: number, start: number): void {
  if (w.invFreq === null) return;
  const d = w.spec.headDim;
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < heads; h++) applyRope(x, (t * heads + h) * d, d, start + t, w.invFreq);
  }
}

function logitsOf(w: DecoderWeights, x: Float64Array, rows: number): Float64Array {
  const { hiddenSize: H, vocabSize: V, normEps } = w.spec;
  return refLinear(norm(x, rows, H, w.finalNorm, normEps), rows, H, w.lmHead, null, V);
}

function checkIds(w: DecoderWeights, ids: readonly number[], what: string): void {
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= w.spec.vocabSize) {
      throw new Error(`refDecoder ${what}: token id ${id} is outside [0, ${w.spec.vocabSize})`);
    }
  }
}

function checkLength(w: DecoderWeights, length: number, what: string): void {
  const { maxPositions, slidingWindow } = w.spec;
  if (maxPositions !== null && length > maxPositions) {
    throw new Error(`refDecoder ${what}: ${length} tokens exceed the ${maxPositions} learned positions`);
  }
  // Within the window every key is visible, so the window changes nothing; beyond it
  // this reference would be wrong, so it refuses rather than ignoring the window.
  if (slidingWindow !== null && length > slidingWindow) {
    throw new Error(`refDecoder ${what}: ${length} tokens exceed sliding_window ${slidingWindow}, which is not modelled`);
  }
}

// ---------------------------------------------------------------------------
// Whole-sequence forward: scores as a full [T, T] matrix per head with a causal mask.

function causalAttention(w: DecoderWeights, layer: DecoderLayer, q: Float64Array, k: Float64Array, v: Float64Array, T: number): Float64Array {
  const { numHeads, numKvHeads, headDim: d } = w.spec;
  const group = numHeads / numKvHeads;
  const context = new Float64Array(T * numHeads * d);
  const scores = new Float64Array(T * T);
  for (let h = 0; h < numHeads; h++) {
    const g = Math.floor(h / group); // repeat_kv: query heads [g·group, (g+1)·group) share kv head g
    for (let i = 0; i < T; i++) {
      for (let j = 0; j < T; j++) {
        if (j > i) {
          scores[i * T + j] = -Infinity;
          continue;
        }
        let dot = 0;
        for (let c = 0; c < d; c++) dot += q[(i * numHeads + h) * d + c]! * k[(j * numKvHeads + g) * d + c]!;
        // build_alibi_tensor adds slope·(key position), not slope·(j − i): equal after softmax.
        scores[i * T + j] = dot * layer.attentionScale + (w.alibi === null ? 0 : w.alibi[h]! * j);
      }
    }
    for (let i = 0; i < T; i++) {
      let max = -Infinity;
      for (let j = 0; j < T; j++) max = Math.max(max, scores[i * T + j]!);
      let sum = 0;
      for (let j = 0; j < T; j++) {
        const e = Math.exp(scores[i * T + j]! - max);
        scores[i * T + j] = e;
        sum += e;
      }
      for (let j = 0; j < T; j++) {
        const p = scores[i * T + j]! / sum;
        if (p === 0) continue;
        for (let c = 0; c < d; c++) {
          const at = (i * numHeads + h) * d + c;
          context[at] = context[at]! + p * v[(j * numKvHeads + g) * d + c]!;
        }
      }
    }
  }
  return context;
}

function forwardFull(w: DecoderWeights, ids: readonly number[]): Float64Array {
  if (ids.length === 0) throw new Error('refDecoder forward: empty sequence');
  checkIds(w, ids, 'forward');
  checkLength(w, ids.length, 'forward');
  const { hiddenSize: H, numHeads, numKvHeads, normEps } = w.spec;
  const T = ids.length;
  let x = embed(w, ids, 0);
  for (const layer of w.layers) {
    const n1 = norm(x, T, H, layer.inputNorm, normEps);
    const q = linear(n1, T, layer.q);
    const k = linear(n1, T, layer.k);
    const v = linear(n1, T, layer.v);
    rotate(w, q, T, numHeads, 0);
    rotate(w, k, T, numKvHeads, 0);
    const attnOut = linear(causalAttention(w, layer, q, k, v, T), T, layer.o);
    const h = addInto(attnOut, w.spec.residualFromNormed ? n1 : x);
    const n2 = norm(h, T, H, layer.postNorm, normEps);
    x = addInto(mlp(w, layer, n2, T), w.spec.residualFromNormed ? n2 : h);
  }
  return logitsOf(w, x, T);
}

// ---------------------------------------------------------------------------
// KV-cache session: one token per step, keys/values of earlier positions cached.

class KvSession {
  /** Per layer, per position: the rotated key row and the value row, [kvHeads·d] each. */
  private readonly keys: Float64Array[][];
  private readonly values: Float64Array[][];
  private length = 0;

  constructor(private readonly w: DecoderWeights) {
    this.keys = w.layers.map(() => []);
    this.values = w.layers.map(() => []);
  }

  /** Appends one token at the next position and returns its logits [vocab]. */
  step(id: number): Float64Array {
    const w = this.w;
    checkIds(w, [id], 'step');
    const pos = this.length;
    checkLength(w, pos + 1, 'step');
    const { hiddenSize: H, numHeads, numKvHeads, headDim: d, normEps } = w.spec;
    const group = numHeads / numKvHeads;
    let x = embed(w, [id], pos);
    w.layers.forEach((layer, l) => {
      const n1 = norm(x, 1, H, layer.inputNorm, normEps);
      const q = linear(n1, 1, layer.q);
      const k = linear(n1, 1, layer.k);
      rotate(w, q, 1, numHeads, pos);
      rotate(w, k, 1, numKvHeads, pos);
      this.keys[l]!.push(k);
      this.values[l]!.push(linear(n1, 1, layer.v));
      const cachedKeys = this.keys[l]!;
      const cachedValues = this.values[l]!;
      const context = new Float64Array(numHeads * d);
      for (let h = 0; h < numHeads; h++) {
        const kvOffset = Math.floor(h / group) * d;
        const weights = cachedKeys.map((key, j) => {
          let dot = 0;
          for (let c = 0; c < d; c++) dot += q[h * d + c]! * key[kvOffset + c]!;
          return dot * layer.attentionScale + (w.alibi === null ? 0 : w.alibi[h]! * j);
        });
        const max = Math.max(...weights);
        const exps = weights.map((s) => Math.exp(s - max));
        const total = exps.reduce((a, b) => a + b, 0);
        cachedValues.forEach((value, j) => {
          for (let c = 0; c < d; c++) context[h * d + c] = context[h * d + c]! + (exps[j]! / total) * value[kvOffset + c]!;
        });
      }
      const h = addInto(linear(context, 1, layer.o), w.spec.residualFromNormed ? n1 : x);
      const n2 = norm(h, 1, H, layer.postNorm, normEps);
      x = addInto(mlp(w, layer, n2, 1), w.spec.residualFromNormed ? n2 : h);
    });
    this.length++;
    return logitsOf(w, x, 1);
  }
}

/** Lowest index of the largest value (torch.argmax's tie rule on CPU). */
export function argmaxLowest(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

export function makeRefDecoder(w: DecoderWeights): RefDecoder {
  return {
    modelType: w.spec.modelType,
    vocabSize: w.spec.vocabSize,
    spec: w.spec,
    eosTokenIds: w.spec.eosTokenIds,
    forward: (ids) => forwardFull(w, ids),
    forwardIncremental(ids) {
      if (ids.length === 0) throw new Error('refDecoder forwardIncremental: empty sequence');
      const session = new KvSession(w);
      const out = new Float64Array(ids.length * w.spec.vocabSize);
      ids.forEach((id, t) => out.set(session.step(id), t * w.spec.vocabSize));
      return out;
    },
    greedy(prompt, maxNewTokens, eosIds = []) {
      if (prompt.length === 0) throw new Error('refDecoder greedy: empty prompt');
      if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new Error(`refDecoder greedy: bad maxNewTokens ${maxNewTokens}`);
      checkIds(w, prompt, 'greedy');
      const generated: number[] = [];
      if (maxNewTokens === 0) return generated;
      const session = new KvSession(w);
      let logits: Float64Array = new Float64Array(0);
      for (const id of prompt) logits = session.step(id);
      for (;;) {
        const next = argmaxLowest(logits);
        generated.push(next);
        if (eosIds.includes(next) || generated.length === maxNewTokens) return generated;
        logits = session.step(next);
      }
    },
  };
}

/**
 * With tied embeddings the lm_head is the embedding matrix. A checkpoint that
 * still stores lm_head.weight must store the same values (transformers would tie
 * them on load whichever it read last), and the copy is dropped.
 */
function dropTiedHead(spec: DecoderSpec, tensors: Map<string, RefTensor>): void {
  const head = tensors.get('lm_head.weight');
  if (!spec.tieWordEmbeddings || head === undefined) return;
  const embedding = tensors.get(`${EMBED_MODULE[spec.family]}.weight`);
  if (embedding === undefined || !head.data.every((v, i) => v === embedding.data[i])) {
    throw new Error('refDecoder: tie_word_embeddings is true but lm_head.weight differs from the token embedding');
  }
  tensors.delete('lm_head.weight');
}

/** modelDir: config.json + model.safetensors (or index + shards). adapterDir: a PEFT LoRA directory, merged. */
export function loadRefDecoder(modelDir: string, adapterDir?: string | null): RefDecoder {
  const spec = parseDecoderSpec(readJsonObject(join(modelDir, 'config.json'), 'config'));
  const tensors = readDecoderCheckpoint(modelDir, spec.family);
  dropTiedHead(spec, tensors);
  if (adapterDir !== undefined && adapterDir !== null) {
    if (isIa3Adapter(adapterDir)) mergePeftIa3(spec, tensors, adapterDir);
    else mergePeftLora(spec, tensors, adapterDir);
  }
  return makeRefDecoder(buildDecoderWeights(spec, tensors));
}

/** One greedy decode of a freshly loaded model (and adapter). */
export function greedyAlone(
  modelDir: string,
  adapterDir: string | null,
  prompt: readonly number[],
  maxNewTokens: number,
  eosIds?: readonly number[],
): number[] {
  return loadRefDecoder(modelDir, adapterDir).greedy(prompt, maxNewTokens, eosIds);
}
