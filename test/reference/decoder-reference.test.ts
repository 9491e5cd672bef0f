// Tests of the float64 causal-decoder reference itself, so that it cannot be
// silently wrong when the GPU engine is checked against it. The hand models below
// recompute each family position by position with per-head loops on plain arrays,
// sharing nothing with the reference's matrix code but inline-math's matVec and
// layerNorm.
import { afterAll, describe, expect, it } from 'vitest';
import { add, layerNorm, matVec, rowOf, type Flat } from './inline-math.js';
import { tempDirs } from './raw-safetensors.js';
import { argmaxLowest, loadRefDecoder, greedyAlone } from './decoder-f64.js';
import { alibiSlopes, ropeInvFreq } from './decoder-positions.js';
import { loraRankAlpha, parsePeftLoraConfig } from './decoder-lora.js';
import {
  bloomTensors,
  dyadicRandom,
  gpt2Tensors,
  llamaTensors,
  writeAdapterDir,
  writeModelDir,
  type FixtureTensors,
  type LlamaShape,
} from './decoder-fixtures.js';

const temp = tempDirs('petserve-decoder-ref-');
afterAll(() => temp.removeAll());

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const zeros = (n: number): Flat => new Array<number>(n).fill(0);
const values = (t: FixtureTensors, name: string): Flat => {
  const tensor = t[name];
  if (tensor === undefined) throw new Error(`fixture lacks ${name}`);
  return tensor.values;
};

/** Softmax without subtracting the max (the scores here are small), unlike the reference. */
function plainSoftmax(scores: Flat): Flat {
  const e = scores.map(Math.exp);
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / total);
}

/** Unmerged LoRA: the extra output s·B·(A·x) a PEFT LoRA layer adds for `module`, or null. */
type LoraHook = (module: string, x: Flat) => Flat | null;

interface HandLora {
  module: string;
  a: Flat; // [r, in]
  b: Flat; // [out, r]
  rank: number;
  scale: number;
}

function loraHook(loras: HandLora[]): LoraHook {
  return (module, x) => {
    const l = loras.find((c) => c.module === module);
    if (l === undefined) return null;
    const inDim = x.length;
    const outDim = l.b.length / l.rank;
    const ax = matVec(l.a, l.rank, inDim, x, zeros(l.rank));
    return matVec(l.b, outDim, l.rank, ax, zeros(outDim)).map((v) => l.scale * v);
  };
}

// ---------------------------------------------------------------------------
// Hand models

interface HandLlamaModel {
  t: FixtureTensors;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  eps: number;
  invFreq: Flat;
  /** Which matrix the logits use (the tie decision is the test's, not the reference's). */
  lmHead: Flat;
  embed?: Flat;
  qkvBias?: boolean;
  lora?: LoraHook;
}

function handLlama(m: HandLlamaModel, ids: number[]): Flat[] {
  const { hidden: H, heads, kvHeads, headDim: d, intermediate: I } = m;
  const t = m.t;
  const rms = (x: Flat, g: Flat): Flat => {
    const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
    return x.map((v, i) => (v / Math.sqrt(ms + m.eps)) * g[i]!);
  };
  const proj = (module: string, x: Flat, out: number, inDim: number, bias: boolean): Flat => {
    const y = matVec(values(t, `${module}.weight`), out, inDim, x, bias ? values(t, `${module}.bias`) : zeros(out));
    const extra = m.lora?.(module, x) ?? null;
    return extra === null ? y : add(y, extra);
  };
  // Rotary as complex multiplication: (x_i + i·x_{i+d/2})·e^{i·pos·f_i}.
  const rotateHead = (v: Flat, pos: number): Flat => {
    const out = v.slice();
    m.invFreq.forEach((f, i) => {
      const re = v[i]!;
      const im = v[i + d / 2]!;
      out[i] = re * Math.cos(pos * f) - im * Math.sin(pos * f);
      out[i + d / 2] = re * Math.sin(pos * f) + im * Math.cos(pos * f);
    });
    return out;
  };
  const embedTable = m.embed ?? values(t, 'model.embed_tokens.weight');
  let xs = ids.map((id) => rowOf(embedTable, id, H));
  for (let l = 0; t[`model.layers.${l}.input_layernorm.weight`] !== undefined; l++) {
    const p = `model.layers.${l}.`;
    const normed = xs.map((x) => rms(x, values(t, `${p}input_layernorm.weight`)));
    const qs = normed.map((x) => proj(`${p}self_attn.q_proj`, x, heads * d, H, m.qkvBias ?? false));
    const ks = normed.map((x) => proj(`${p}self_attn.k_proj`, x, kvHeads * d, H, m.qkvBias ?? false));
    const vs = normed.map((x) => proj(`${p}self_attn.v_proj`, x, kvHeads * d, H, m.qkvBias ?? false));
    xs = xs.map((x, pos) => {
      const context: Flat = [];
      for (let h = 0; h < heads; h++) {
        const g = Math.trunc((h * kvHeads) / heads);
        const q = rotateHead(qs[pos]!.slice(h * d, (h + 1) * d), pos);
        const scores: Flat = [];
        for (let s = 0; s <= pos; s++) {
          const k = rotateHead(ks[s]!.slice(g * d, (g + 1) * d), s);
          scores.push(q.reduce((a, v, c) => a + v * k[c]!, 0) / Math.sqrt(d));
        }
        const probs = plainSoftmax(scores);
        for (let c = 0; c < d; c++) context.push(probs.reduce((a, pr, s) => a + pr * vs[s]![g * d + c]!, 0));
      }
      const h1 = add(x, proj(`${p}self_attn.o_proj`, context, H, heads * d, false));
      const n2 = rms(h1, values(t, `${p}post_attention_layernorm.weight`));
      const gate = proj(`${p}mlp.gate_proj`, n2, I, H, false);
      const up = proj(`${p}mlp.up_proj`, n2, I, H, false);
      const act = gate.map((v, i) => (v * up[i]!) / (1 + Math.exp(-v)));
      return add(h1, proj(`${p}mlp.down_proj`, act, H, I, false));
    });
  }
  return xs.map((x) => matVec(m.lmHead, m.vocab, H, rms(x, values(t, 'model.norm.weight')), zeros(m.vocab)));
}

interface HandGpt2Model {
  t: FixtureTensors;
  hidden: number;
  heads: number;
  inner: number;
  vocab: number;
  eps: number;
  lora?: LoraHook;
}

/** GPT-2 with Conv1D as x·W (W stored [in, out]) and gelu_new. */
function handGpt2(m: HandGpt2Model, ids: number[]): Flat[] {
  const { hidden: H, heads, inner } = m;
  const d = H / heads;
  const t = m.t;
  const conv1d = (module: string, x: Flat, out: number): Flat => {
    const w = values(t, `${module}.weight`);
    const y = values(t, `${module}.bias`).slice();
    for (let o = 0; o < out; o++) for (let i = 0; i < x.length; i++) y[o] = y[o]! + x[i]! * w[i * out + o]!;
    const extra = m.lora?.(module, x) ?? null;
    return extra === null ? y : add(y, extra);
  };
  const gelu = (v: number): number => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  const ln = (x: Flat, name: string): Flat => layerNorm(x, values(t, `${name}.weight`), values(t, `${name}.bias`), m.eps);
  let xs = ids.map((id, pos) => add(rowOf(values(t, 'transformer.wte.weight'), id, H), rowOf(values(t, 'transformer.wpe.weight'), pos, H)));
  for (let l = 0; t[`transformer.h.${l}.ln_1.weight`] !== undefined; l++) {
    const p = `transformer.h.${l}.`;
    const qkv = xs.map((x) => conv1d(`${p}attn.c_attn`, ln(x, `${p}ln_1`), 3 * H));
    xs = xs.map((x, pos) => {
      const context: Flat = [];
      for (let h = 0; h < heads; h++) {
        const q = qkv[pos]!.slice(h * d, (h + 1) * d);
        const scores = qkv.slice(0, pos + 1).map((row) => q.reduce((a, v, c) => a + v * row[H + h * d + c]!, 0) / Math.sqrt(d));
        const probs = plainSoftmax(scores);
        for (let c = 0; c < d; c++) context.push(probs.reduce((a, pr, s) => a + pr * qkv[s]![2 * H + h * d + c]!, 0));
      }
      const h1 = add(x, conv1d(`${p}attn.c_proj`, context, H));
      const hidden = conv1d(`${p}mlp.c_fc`, ln(h1, `${p}ln_2`), inner).map(gelu);
      return add(h1, conv1d(`${p}mlp.c_proj`, hidden, H));
    });
  }
  return xs.map((x) => matVec(values(t, 'transformer.wte.weight'), m.vocab, H, ln(x, 'transformer.ln_f'), zeros(m.vocab)));
}

interface HandBloomModel {
  t: FixtureTensors;
  hidden: number;
  heads: number;
  vocab: number;
  eps: number;
  slopes: Flat;
  postLayernormResidual: boolean;
}

/** BLOOM with q/k/v read per head from the fused output and ALiBi as slope·(s − pos). */
function handBloom(m: HandBloomModel, ids: number[]): Flat[] {
  const { hidden: H, heads } = m;
  const d = H / heads;
  const t = m.t;
  const ln = (x: Flat, name: string): Flat => layerNorm(x, values(t, `${name}.weight`), values(t, `${name}.bias`), m.eps);
  const lin = (name: string, x: Flat, out: number): Flat => matVec(values(t, `${name}.weight`), out, x.length, x, values(t, `${name}.bias`));
  const gelu = (v: number): number => v * 0.5 * (1 + Math.tanh(0.79788456 * v * (1 + 0.044715 * v * v)));
  const wordEmbeddings = values(t, 'transformer.word_embeddings.weight');
  let xs = ids.map((id) => ln(rowOf(wordEmbeddings, id, H), 'transformer.word_embeddings_layernorm'));
  for (let l = 0; t[`transformer.h.${l}.input_layernorm.weight`] !== undefined; l++) {
    const p = `transformer.h.${l}.`;
    const normed = xs.map((x) => ln(x, `${p}input_layernorm`));
    const fused = normed.map((x) => lin(`${p}self_attention.query_key_value`, x, 3 * H));
    const part = (row: Flat, h: number, which: number, c: number): number => row[h * 3 * d + which * d + c]!;
    xs = xs.map((x, pos) => {
      const context: Flat = [];
      for (let h = 0; h < heads; h++) {
        const scores: Flat = [];
        for (let s = 0; s <= pos; s++) {
          let dot = 0;
          for (let c = 0; c < d; c++) dot += part(fused[pos]!, h, 0, c) * part(fused[s]!, h, 1, c);
          scores.push(dot / Math.sqrt(d) + m.slopes[h]! * (s - pos));
        }
        const probs = plainSoftmax(scores);
        for (let c = 0; c < d; c++) context.push(probs.reduce((a, pr, s) => a + pr * part(fused[s]!, h, 2, c), 0));
      }
      const residual1 = m.postLayernormResidual ? normed[pos]! : x;
      const h1 = add(residual1, lin(`${p}self_attention.dense`, context, H));
      const n2 = ln(h1, `${p}post_attention_layernorm`);
      const residual2 = m.postLayernormResidual ? n2 : h1;
      return add(residual2, lin(`${p}mlp.dense_4h_to_h`, lin(`${p}mlp.dense_h_to_4h`, n2, 4 * H).map(gelu), H));
    });
  }
  return xs.map((x) => matVec(wordEmbeddings, m.vocab, H, ln(x, 'transformer.ln_f'), zeros(m.vocab)));
}

// ---------------------------------------------------------------------------
// Fixture models

const LLAMA_TINY: LlamaShape = { vocab: 5, hidden: 8, layers: 1, heads: 2, kvHeads: 1, headDim: 4, intermediate: 6 };

function llamaConfig(s: LlamaShape, extra: object = {}): object {
  return {
    model_type: 'llama',
    vocab_size: s.vocab,
    hidden_size: s.hidden,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    intermediate_size: s.intermediate,
    rms_norm_eps: 1e-6,
    hidden_act: 'silu',
    ...extra,
  };
}

const LLAMA3_ROPE = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 };
/** θ = 100, d = 4: base frequencies 1 and 0.1, wavelengths 2π and 20π against a 16..64 blend window. */
const LLAMA3_INV_FREQ_THETA100_D4 = [1, 0.013042256043820465];

function writeLlama(shape: LlamaShape, config: object, seed: number): { dir: string; t: FixtureTensors } {
  const t = llamaTensors(shape, seed);
  return { dir: writeModelDir(temp.make(), llamaConfig(shape, config), t), t };
}

interface CacheCase {
  name: string;
  dir: () => string;
  prompt: number[];
}

const rand = dyadicRandom(99);
const CACHE_CASES: CacheCase[] = [
  {
    name: 'llama (GQA 2, llama3 rope, attention_bias, tied)',
    dir: () =>
      writeLlama(
        { vocab: 11, hidden: 16, layers: 2, heads: 4, kvHeads: 2, headDim: 4, intermediate: 20, qkvBias: true, oBias: true },
        { rope_theta: 500, rope_scaling: LLAMA3_ROPE, attention_bias: true, tie_word_embeddings: true },
        1,
      ).dir,
    prompt: [3, 1, 4, 1, 5, 9, 2, 6],
  },
  {
    name: 'qwen2 (q/k/v bias, untied, head_dim key)',
    dir: () => {
      const shape: LlamaShape = { vocab: 9, hidden: 8, layers: 2, heads: 2, kvHeads: 1, headDim: 6, intermediate: 12, qkvBias: true, lmHead: true };
      return writeModelDir(temp.make(), { ...llamaConfig(shape), model_type: 'qwen2', head_dim: 6, rope_theta: 1000 }, llamaTensors(shape, 2));
    },
    prompt: [0, 8, 7, 1, 1, 2],
  },
  {
    name: 'mistral (linear rope, sliding window larger than the run)',
    dir: () => {
      const shape: LlamaShape = { vocab: 7, hidden: 12, layers: 2, heads: 6, kvHeads: 2, headDim: 2, intermediate: 10, lmHead: true };
      return writeModelDir(
        temp.make(),
        { ...llamaConfig(shape), model_type: 'mistral', sliding_window: 64, rope_scaling: { type: 'linear', factor: 2 } },
        llamaTensors(shape, 3),
      );
    },
    prompt: [6, 5, 4, 3, 2, 1, 0],
  },
  {
    name: 'gpt2 (bare GPT2Model names, scale_attn_by_inverse_layer_idx)',
    dir: () =>
      writeModelDir(
        temp.make(),
        { model_type: 'gpt2', vocab_size: 10, n_embd: 8, n_layer: 2, n_head: 2, n_positions: 24, scale_attn_by_inverse_layer_idx: true },
        gpt2Tensors({ vocab: 10, hidden: 8, layers: 2, positions: 24, inner: 32, bare: true }, 4),
      ),
    prompt: [9, 0, 9, 1, 2],
  },
  {
    name: 'bloom (6 heads, residual after layernorm)',
    dir: () =>
      writeModelDir(
        temp.make(),
        { model_type: 'bloom', vocab_size: 8, hidden_size: 12, n_layer: 2, n_head: 6, apply_residual_connection_post_layernorm: true },
        bloomTensors({ vocab: 8, hidden: 12, layers: 2 }, 5),
      ),
    prompt: [1, 7, 2, 6, 3, 5],
  },
];

describe('decoder reference: whole-sequence forward against the KV-cache path', () => {
  it.each(CACHE_CASES)('$name: forward() logits of every position equal the incremental logits (≤1e-9)', ({ dir, prompt }) => {
    const model = loadRefDecoder(dir());
    const full = model.forward(prompt);
    expect(full.length).toBe(prompt.length * model.vocabSize);
    expect(full.every(Number.isFinite)).toBe(true);
    expect(maxAbsDiff(full, model.forwardIncremental(prompt))).toBeLessThanOrEqual(1e-9);
  });

  it.each(CACHE_CASES)('$name: greedy() picks the argmax of forward() at every step', ({ dir, prompt }) => {
    const model = loadRefDecoder(dir());
    const generated = model.greedy(prompt.slice(0, 3), 12);
    expect(generated).toHaveLength(12);
    const all = [...prompt.slice(0, 3), ...generated];
    const logits = model.forward(all);
    const V = model.vocabSize;
    generated.forEach((id, i) => {
      const pos = 2 + i;
      expect(argmaxLowest(logits.subarray(pos * V, (pos + 1) * V))).toBe(id);
    });
  });

  it('greedy stops right after an eos id and returns only new ids; argmax breaks ties to the lowest id', () => {
    const model = loadRefDecoder(CACHE_CASES[0]!.dir());
    const free = model.greedy([3, 1], 10);
    const eos = free[4]!;
    const stopped = model.greedy([3, 1], 10, [eos]);
    expect(stopped).toEqual(free.slice(0, free.indexOf(eos) + 1));
    expect(model.greedy([3, 1], 0)).toEqual([]);
    expect(argmaxLowest([0.5, 2, -1, 2])).toBe(1);
  });
});

// ---------------------------------------------------------------------------

describe('decoder reference: position encodings from their formulas', () => {
  it('rope inv_freq: default θ^(−2i/d), linear divides by the factor, llama3 keeps/blends/divides by wavelength', () => {
    expect(maxAbsDiff(ropeInvFreq(8, 10000, { kind: 'none' }), [1, 0.1, 0.01, 0.001])).toBeLessThan(1e-15);
    expect(maxAbsDiff(ropeInvFreq(8, 10000, { kind: 'linear', factor: 4 }), [0.25, 0.025, 0.0025, 0.00025])).toBeLessThan(1e-15);
    // original 64, low 1, high 4: wavelengths 2π (< 16, kept), 20π (in 16..64: smooth
    // s = (64/20π − 1)/3 = 0.0061972…, (1 − s)·0.1/8 + s·0.1), 200π and 2000π (> 64, /8).
    const llama3 = { kind: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 } as const;
    expect(maxAbsDiff(ropeInvFreq(8, 10000, llama3), [1, 0.013042256043820465, 0.00125, 0.000125])).toBeLessThan(1e-15);
    expect(maxAbsDiff(ropeInvFreq(4, 100, llama3), LLAMA3_INV_FREQ_THETA100_D4)).toBeLessThan(1e-15);
  });

  it('ALiBi slopes: powers of 2^(−8/n), plus odd powers of 2^(−4/n′) for head counts that are not powers of two', () => {
    // 6 heads: closest power 4 → 2^-2, 2^-4, 2^-6, 2^-8; 2 extra from base 2^-1 at odd powers 1, 3.
    expect(Array.from(alibiSlopes(6))).toEqual([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]);
    expect(Array.from(alibiSlopes(8))).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((k) => 2 ** -k));
    // 12 heads: 8 from base 2^-1, then 4 from base 2^-0.5 at powers 1, 3, 5, 7.
    const twelve = [...[1, 2, 3, 4, 5, 6, 7, 8].map((k) => 2 ** -k), ...[0.5, 1.5, 2.5, 3.5].map((k) => 2 ** -k)];
    expect(maxAbsDiff(alibiSlopes(12), twelve)).toBeLessThan(1e-16);
    expect(Array.from(alibiSlopes(1))).toEqual([2 ** -8]);
  });
});

// ---------------------------------------------------------------------------

describe('decoder reference: tiny models against hand computation', () => {
  const ids = [4, 0, 2, 2];

  it('llama, 2 query heads sharing 1 kv head, llama3 rope, tied lm_head', () => {
    const { dir, t } = writeLlama(LLAMA_TINY, { rope_theta: 100, rope_scaling: LLAMA3_ROPE, tie_word_embeddings: true }, 11);
    const hand = handLlama(
      { t, ...LLAMA_TINY, eps: 1e-6, invFreq: LLAMA3_INV_FREQ_THETA100_D4, lmHead: values(t, 'model.embed_tokens.weight') },
      ids,
    );
    expect(maxAbsDiff(loadRefDecoder(dir).forward(ids), hand.flat())).toBeLessThan(1e-12);
  });

  it('llama, 4 query heads on 2 kv heads: query heads 0,1 read kv head 0 and heads 2,3 kv head 1', () => {
    const shape: LlamaShape = { ...LLAMA_TINY, heads: 4, kvHeads: 2, headDim: 2 };
    const { dir, t } = writeLlama(shape, { tie_word_embeddings: true }, 17);
    const hand = handLlama({ t, ...shape, eps: 1e-6, invFreq: [1], lmHead: values(t, 'model.embed_tokens.weight') }, ids);
    expect(maxAbsDiff(loadRefDecoder(dir).forward(ids), hand.flat())).toBeLessThan(1e-12);
  });

  it('qwen2 with q/k/v biases, linear rope and its own lm_head', () => {
    const shape = { ...LLAMA_TINY, qkvBias: true, lmHead: true };
    const t = llamaTensors(shape, 12);
    const dir = writeModelDir(temp.make(), { ...llamaConfig(shape), model_type: 'qwen2', rope_theta: 100, rope_scaling: { rope_type: 'linear', factor: 4 } }, t);
    const hand = handLlama({ t, ...shape, eps: 1e-6, invFreq: [0.25, 0.025], lmHead: values(t, 'lm_head.weight'), qkvBias: true }, ids);
    expect(maxAbsDiff(loadRefDecoder(dir).forward(ids), hand.flat())).toBeLessThan(1e-12);
  });

  it('gpt2 (hidden 4, 2 heads, vocab 5): Conv1D x·W, fused q|k|v, gelu_new, tied lm_head', () => {
    const t = gpt2Tensors({ vocab: 5, hidden: 4, layers: 1, positions: 6, inner: 16 }, 13);
    const dir = writeModelDir(temp.make(), { model_type: 'gpt2', vocab_size: 5, n_embd: 4, n_layer: 1, n_head: 2, n_positions: 6 }, t);
    const hand = handGpt2({ t, hidden: 4, heads: 2, inner: 16, vocab: 5, eps: 1e-5 }, ids);
    expect(maxAbsDiff(loadRefDecoder(dir).forward(ids), hand.flat())).toBeLessThan(1e-12);
    expect(() => loadRefDecoder(dir).forward([0, 1, 2, 3, 4, 0, 1])).toThrow(/learned positions/);
  });

  it.each([false, true])('bloom, 6 heads (ALiBi slopes 1/4 … 1/256, 1/2, 1/8), per-head fused qkv, post-LN residual %s', (postLn) => {
    const t = bloomTensors({ vocab: 5, hidden: 12, layers: 1 }, 14);
    const config = { model_type: 'bloom', vocab_size: 5, hidden_size: 12, n_layer: 1, n_head: 6, apply_residual_connection_post_layernorm: postLn };
    const dir = writeModelDir(temp.make(), config, t);
    const slopes = [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8];
    const hand = handBloom({ t, hidden: 12, heads: 6, vocab: 5, eps: 1e-5, slopes, postLayernormResidual: postLn }, ids);
    expect(maxAbsDiff(loadRefDecoder(dir).forward(ids), hand.flat())).toBeLessThan(1e-12);
  });

  it.each(['F16', 'BF16'] as const)('%s weights and a 3-shard index load to the same float64 values as F32', (dtype) => {
    const shape: LlamaShape = { ...LLAMA_TINY, layers: 2 };
    const t = llamaTensors(shape, 15);
    const config = llamaConfig(shape, { tie_word_embeddings: true });
    const f32 = loadRefDecoder(writeModelDir(temp.make(), config, t)).forward(ids);
    expect(Array.from(loadRefDecoder(writeModelDir(temp.make(), config, t, dtype)).forward(ids))).toEqual(Array.from(f32));
    expect(Array.from(loadRefDecoder(writeModelDir(temp.make(), config, t, 'F32', 3)).forward(ids))).toEqual(Array.from(f32));
  });

  it('refuses what it does not model: a run past sliding_window, a missing untied lm_head, a stray tensor, bad ids', () => {
    const shape = { ...LLAMA_TINY, lmHead: true };
    const t = llamaTensors(shape, 16);
    const mistral = loadRefDecoder(writeModelDir(temp.make(), { ...llamaConfig(shape), model_type: 'mistral', sliding_window: 3 }, t));
    expect(mistral.forward([1, 2, 3]).length).toBe(15);
    expect(() => mistral.forward([1, 2, 3, 4])).toThrow(/sliding_window/);
    expect(() => mistral.greedy([1, 2], 5)).toThrow(/sliding_window/);
    const { ['lm_head.weight']: _dropped, ...noHead } = t;
    expect(() => loadRefDecoder(writeModelDir(temp.make(), llamaConfig(shape), noHead))).toThrow(/lm_head/);
    const stray = { ...t, 'model.layers.0.self_attn.q_proj.bias': { shape: [8], values: rand(8) } };
    expect(() => loadRefDecoder(writeModelDir(temp.make(), llamaConfig(shape), stray))).toThrow(/q_proj\.bias/);
    expect(() => mistral.forward([5])).toThrow(/outside/);
  });
});

// ---------------------------------------------------------------------------

function loraPair(seed: number, rank: number, inDim: number, outDim: number): { a: Flat; b: Flat } {
  const r = dyadicRandom(seed);
  return { a: r(rank * inDim), b: r(outDim * rank) };
}

describe('decoder reference: PEFT LoRA merge equals base forward plus unmerged LoRA', () => {
  const ids = [1, 3, 0, 4];
  const shape = LLAMA_TINY;
  const H = shape.hidden;

  it('rank/alpha per module: r and lora_alpha, rank_pattern / alpha_pattern by suffix regex, rsLoRA √r', () => {
    const config = parsePeftLoraConfig({
      r: 4,
      lora_alpha: 8,
      target_modules: ['q_proj'],
      rank_pattern: { proj: 3, 'self_attn.v_proj': 2 },
      alpha_pattern: { down_proj: 6 },
    });
    const q = 'model.layers.0.self_attn.q_proj';
    // "proj" would need a dot before it: q_proj keeps r.
    expect(loraRankAlpha(config, q)).toEqual({ rank: 4, alpha: 8, scale: 2 });
    expect(loraRankAlpha(config, 'model.layers.0.self_attn.v_proj')).toEqual({ rank: 2, alpha: 8, scale: 4 });
    expect(loraRankAlpha(config, 'model.layers.0.mlp.down_proj')).toEqual({ rank: 4, alpha: 6, scale: 1.5 });
    // The first matching key in file order wins, even over a longer one.
    const ordered = parsePeftLoraConfig({ r: 4, lora_alpha: 8, rank_pattern: { q_proj: 5, 'layers.0.self_attn.q_proj': 2 } });
    expect(loraRankAlpha(ordered, q).rank).toBe(5);
    const rs = parsePeftLoraConfig({ r: 4, lora_alpha: 8, use_rslora: true, rank_pattern: { v_proj: 2 } });
    expect(loraRankAlpha(rs, q).scale).toBe(4);
    expect(loraRankAlpha(rs, 'model.layers.0.self_attn.v_proj').scale).toBeCloseTo(8 / Math.SQRT2, 15);
  });

  it.each([false, true])('llama q/v/down LoRA with rank_pattern, alpha_pattern, ".default" keys (rsLoRA %s)', (rsLora) => {
    const { dir, t } = writeLlama(shape, { rope_theta: 100, tie_word_embeddings: true }, 21);
    const kv = shape.kvHeads * shape.headDim;
    const q = loraPair(31, 4, H, H);
    const v = loraPair(32, 2, H, kv);
    const down = loraPair(33, 4, shape.intermediate, H);
    const p = 'model.layers.0.';
    const adapter = writeAdapterDir(
      temp.make(),
      {
        r: 4,
        lora_alpha: 8,
        use_rslora: rsLora,
        target_modules: ['q_proj', 'v_proj', 'down_proj'],
        rank_pattern: { v_proj: 2 },
        alpha_pattern: { 'mlp.down_proj': 3 },
        fan_in_fan_out: false,
      },
      {
        [`base_model.model.${p}self_attn.q_proj.lora_A.weight`]: { shape: [4, H], values: q.a },
        [`base_model.model.${p}self_attn.q_proj.lora_B.weight`]: { shape: [H, 4], values: q.b },
        [`base_model.model.${p}self_attn.v_proj.lora_A.default.weight`]: { shape: [2, H], values: v.a },
        [`base_model.model.${p}self_attn.v_proj.lora_B.default.weight`]: { shape: [kv, 2], values: v.b },
        [`base_model.model.${p}mlp.down_proj.lora_A.weight`]: { shape: [4, shape.intermediate], values: down.a },
        [`base_model.model.${p}mlp.down_proj.lora_B.weight`]: { shape: [H, 4], values: down.b },
      },
    );
    const scale = (alpha: number, r: number): number => (rsLora ? alpha / Math.sqrt(r) : alpha / r);
    const lora = loraHook([
      { module: `${p}self_attn.q_proj`, ...q, rank: 4, scale: scale(8, 4) },
      { module: `${p}self_attn.v_proj`, ...v, rank: 2, scale: scale(8, 2) },
      { module: `${p}mlp.down_proj`, ...down, rank: 4, scale: scale(3, 4) },
    ]);
    const embed = values(t, 'model.embed_tokens.weight');
    const base = { t, ...shape, eps: 1e-6, invFreq: [1, 0.1], lmHead: embed };
    const merged = loadRefDecoder(dir, adapter).forward(ids);
    expect(maxAbsDiff(merged, handLlama({ ...base, lora }, ids).flat())).toBeLessThan(1e-12);
    // The adapter changes the logits by far more than the tolerance.
    expect(maxAbsDiff(merged, handLlama(base, ids).flat())).toBeGreaterThan(1e-3);
    expect(maxAbsDiff(loadRefDecoder(dir, null).forward(ids), handLlama(base, ids).flat())).toBeLessThan(1e-12);
  });

  it.each([true, false])('gpt2 Conv1D targets add the delta transposed (fan_in_fan_out %s: PEFT forces it on for Conv1D)', (fanInFanOut) => {
    const gshape = { vocab: 5, hidden: 4, layers: 1, positions: 6, inner: 16 };
    const t = gpt2Tensors(gshape, 22);
    const dir = writeModelDir(temp.make(), { model_type: 'gpt2', vocab_size: 5, n_embd: 4, n_layer: 1, n_head: 2, n_positions: 6 }, t);
    const attn = loraPair(41, 2, 4, 12);
    const fc = loraPair(42, 2, 4, 16);
    const adapter = writeAdapterDir(
      temp.make(),
      { r: 2, lora_alpha: 3, target_modules: ['c_attn', 'c_fc'], fan_in_fan_out: fanInFanOut },
      {
        'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight': { shape: [2, 4], values: attn.a },
        'base_model.model.transformer.h.0.attn.c_attn.lora_B.weight': { shape: [12, 2], values: attn.b },
        'base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight': { shape: [2, 4], values: fc.a },
        'base_model.model.transformer.h.0.mlp.c_fc.lora_B.weight': { shape: [16, 2], values: fc.b },
      },
    );
    const lora = loraHook([
      { module: 'transformer.h.0.attn.c_attn', ...attn, rank: 2, scale: 1.5 },
      { module: 'transformer.h.0.mlp.c_fc', ...fc, rank: 2, scale: 1.5 },
    ]);
    const hand = handGpt2({ t, hidden: 4, heads: 2, inner: 16, vocab: 5, eps: 1e-5, lora }, ids);
    expect(maxAbsDiff(loadRefDecoder(dir, adapter).forward(ids), hand.flat())).toBeLessThan(1e-12);
  });

  describe('modules_to_save', () => {
    const newTable = (seed: number): Flat => dyadicRandom(seed)(shape.vocab * H, 1);

    it('an untied lm_head saved as PEFT writes it (base_model.model.lm_head.weight) replaces the head', () => {
      const s = { ...shape, lmHead: true };
      const { dir, t } = writeLlama(s, { rope_theta: 100 }, 23);
      const head = newTable(51);
      const adapter = writeAdapterDir(temp.make(), { r: 2, lora_alpha: 2, target_modules: ['q_proj'], modules_to_save: ['lm_head'] }, {
        'base_model.model.lm_head.weight': { shape: [shape.vocab, H], values: head },
      });
      const hand = handLlama({ t, ...s, eps: 1e-6, invFreq: [1, 0.1], lmHead: head }, ids);
      expect(maxAbsDiff(loadRefDecoder(dir, adapter).forward(ids), hand.flat())).toBeLessThan(1e-12);
    });

    it('with tied weights, a saved embed_tokens changes the lookup only; lm_head keeps the original tied matrix', () => {
      const { dir, t } = writeLlama(shape, { rope_theta: 100, tie_word_embeddings: true }, 24);
      const table = newTable(52);
      const adapter = writeAdapterDir(temp.make(), { r: 2, lora_alpha: 2, target_modules: ['q_proj'], modules_to_save: ['embed_tokens'] }, {
        'base_model.model.model.embed_tokens.modules_to_save.default.weight': { shape: [shape.vocab, H], values: table },
      });
      const hand = handLlama({ t, ...shape, eps: 1e-6, invFreq: [1, 0.1], embed: table, lmHead: values(t, 'model.embed_tokens.weight') }, ids);
      expect(maxAbsDiff(loadRefDecoder(dir, adapter).forward(ids), hand.flat())).toBeLessThan(1e-12);
    });

    it('with tied weights, a saved lm_head changes the logits only; the embedding keeps the original matrix', () => {
      const { dir, t } = writeLlama(shape, { rope_theta: 100, tie_word_embeddings: true }, 25);
      const head = newTable(53);
      const adapter = writeAdapterDir(temp.make(), { r: 2, lora_alpha: 2, target_modules: ['q_proj'], modules_to_save: ['lm_head'] }, {
        'base_model.model.lm_head.modules_to_save.weight': { shape: [shape.vocab, H], values: head },
      });
      const hand = handLlama({ t, ...shape, eps: 1e-6, invFreq: [1, 0.1], lmHead: head }, ids);
      expect(maxAbsDiff(loadRefDecoder(dir, adapter).forward(ids), hand.flat())).toBeLessThan(1e-12);
    });
  });

  describe('refusals name the module', () => {
    const qKeys = (module: string, r = 2): FixtureTensors => ({
      [`base_model.model.${module}.lora_A.weight`]: { shape: [r, H], values: dyadicRandom(62)(r * H) },
      [`base_model.model.${module}.lora_B.weight`]: { shape: [H, r], values: dyadicRandom(63)(H * r) },
    });
    const q0 = 'model.layers.0.self_attn.q_proj';
    const load = (config: object, tensors: FixtureTensors): (() => unknown) => {
      const { dir } = writeLlama(shape, { tie_word_embeddings: true }, 26);
      const adapter = writeAdapterDir(temp.make(), config, tensors);
      return () => loadRefDecoder(dir, adapter);
    };

    it('a LoRA module outside target_modules', () => {
      expect(load({ r: 2, lora_alpha: 2, target_modules: ['v_proj'] }, qKeys(q0))).toThrow(/self_attn\.q_proj.*not targeted/);
      expect(load({ r: 2, lora_alpha: 2, target_modules: '.*\\.v_proj' }, qKeys(q0))).toThrow(/not targeted/);
      expect(load({ r: 2, lora_alpha: 2, target_modules: '.*\\.(q|v)_proj' }, qKeys(q0))).not.toThrow();
    });

    it('lora tensors whose rank disagrees with r / rank_pattern', () => {
      expect(load({ r: 4, lora_alpha: 2, target_modules: ['q_proj'] }, qKeys(q0))).toThrow(/q_proj.*rank 4/);
      expect(load({ r: 4, lora_alpha: 2, target_modules: ['q_proj'], rank_pattern: { q_proj: 2 } }, qKeys(q0))).not.toThrow();
    });

    it('bias other than "none", DoRA, and saved tensors of modules not in modules_to_save', () => {
      expect(load({ r: 2, lora_alpha: 2, target_modules: ['q_proj'], bias: 'lora_only' }, qKeys(q0))).toThrow(/bias/);
      expect(load({ r: 2, lora_alpha: 2, target_modules: ['q_proj'], use_dora: true }, qKeys(q0))).toThrow(/use_dora/);
      const stray = { ...qKeys(q0), 'base_model.model.lm_head.weight': { shape: [shape.vocab, H], values: dyadicRandom(64)(shape.vocab * H) } };
      expect(load({ r: 2, lora_alpha: 2, target_modules: ['q_proj'] }, stray)).toThrow(/lm_head\.weight.*modules_to_save/);
    });
  });
});

describe('greedyAlone', () => {
  it('loads and decodes in one call, matching a loaded model', () => {
    const dir = CACHE_CASES[3]!.dir();
    expect(greedyAlone(dir, null, [1, 2], 6)).toEqual(loadRefDecoder(dir).greedy([1, 2], 6));
  });
});
