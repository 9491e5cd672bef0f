// Tiny random decoder checkpoints and PEFT adapters for the decoder reference's own
// tests, written with raw-safetensors (no src/ code). Values are multiples of 1/64
// in [-1, 1], so F32, F16 and BF16 files all hold them exactly.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeRawSafetensors } from './raw-safetensors.js';
import type { RawTensor } from './raw-safetensors.js';

export type Dtype = 'F32' | 'F16' | 'BF16';

export interface FixtureTensor {
  shape: number[];
  values: number[];
}
export type FixtureTensors = Record<string, FixtureTensor>;

/** Deterministic multiples of 1/64 in [-scale, scale] (scale a power of two ≤ 1). */
export function dyadicRandom(seed: number): (n: number, scale?: number) => number[] {
  let state = seed >>> 0;
  const next = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  return (n, scale = 0.5) => Array.from({ length: n }, () => Math.round((2 * next() - 1) * 64) * (scale / 64));
}

function f16Bits(v: number): number {
  if (v === 0) return Object.is(v, -0) ? 0x8000 : 0;
  const sign = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  const exponent = Math.floor(Math.log2(a));
  if (exponent < -14 || exponent > 15) throw new Error(`f16Bits: ${v} is outside the normal f16 range`);
  const mantissa = (a / 2 ** exponent - 1) * 1024;
  if (!Number.isInteger(mantissa)) throw new Error(`f16Bits: ${v} is not exactly representable`);
  return sign | ((exponent + 15) << 10) | mantissa;
}

function encode(values: number[], dtype: Dtype): Uint8Array {
  if (dtype === 'F32') {
    const f32 = Float32Array.from(values);
    if (!values.every((v, i) => v === f32[i])) throw new Error('encode: a value is not exactly representable in f32');
    return new Uint8Array(f32.buffer);
  }
  const bits = new Uint16Array(values.length);
  values.forEach((v, i) => {
    if (dtype === 'F16') {
      bits[i] = f16Bits(v);
    } else {
      const word = new Uint32Array(Float32Array.of(v).buffer)[0]!;
      if ((word & 0xffff) !== 0) throw new Error(`encode: ${v} is not exactly representable in bf16`);
      bits[i] = word >>> 16;
    }
  });
  return new Uint8Array(bits.buffer);
}

export function toRaw(tensors: FixtureTensors, dtype: Dtype): RawTensor[] {
  return Object.entries(tensors).map(([name, t]) => {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.values.length) throw new Error(`toRaw: ${name} has ${t.values.length} values for shape ${JSON.stringify(t.shape)}`);
    return { name, dtype, shape: t.shape, bytes: encode(t.values, dtype) };
  });
}

/** config.json + model.safetensors, or (shards > 1) an index and that many shard files. */
export function writeModelDir(dir: string, config: object, tensors: FixtureTensors, dtype: Dtype = 'F32', shards = 1): string {
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  const raw = toRaw(tensors, dtype);
  if (shards === 1) {
    writeRawSafetensors(join(dir, 'model.safetensors'), raw);
    return dir;
  }
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `model-0000${s + 1}-of-0000${shards}.safetensors`;
    const part = raw.filter((_, i) => i % shards === s);
    for (const t of part) weightMap[t.name] = file;
    writeRawSafetensors(join(dir, file), part);
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return dir;
}

export function writeAdapterDir(dir: string, config: object, tensors: FixtureTensors): string {
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', bias: 'none', ...config }));
  writeRawSafetensors(join(dir, 'adapter_model.safetensors'), toRaw(tensors, 'F32'));
  return dir;
}

const tensor = (rand: (n: number, s?: number) => number[], shape: number[], scale?: number): FixtureTensor => ({
  shape,
  values: rand(shape.reduce((a, b) => a * b, 1), scale),
});

/** Norm gains near 1 so activations stay O(1). */
const gain = (rand: (n: number, s?: number) => number[], n: number): FixtureTensor => ({
  shape: [n],
  values: rand(n, 0.25).map((v) => 1 + Math.round(v * 32) / 32),
});

export interface LlamaShape {
  vocab: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  qkvBias?: boolean;
  oBias?: boolean;
  lmHead?: boolean;
}

export function llamaTensors(s: LlamaShape, seed: number): FixtureTensors {
  const rand = dyadicRandom(seed);
  const t: FixtureTensors = { 'model.embed_tokens.weight': tensor(rand, [s.vocab, s.hidden], 1) };
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}.`;
    t[`${p}input_layernorm.weight`] = gain(rand, s.hidden);
    t[`${p}self_attn.q_proj.weight`] = tensor(rand, [s.heads * s.headDim, s.hidden]);
    t[`${p}self_attn.k_proj.weight`] = tensor(rand, [s.kvHeads * s.headDim, s.hidden]);
    t[`${p}self_attn.v_proj.weight`] = tensor(rand, [s.kvHeads * s.headDim, s.hidden]);
    if (s.qkvBias) {
      t[`${p}self_attn.q_proj.bias`] = tensor(rand, [s.heads * s.headDim]);
      t[`${p}self_attn.k_proj.bias`] = tensor(rand, [s.kvHeads * s.headDim]);
      t[`${p}self_attn.v_proj.bias`] = tensor(rand, [s.kvHeads * s.headDim]);
    }
    t[`${p}self_attn.o_proj.weight`] = tensor(rand, [s.hidden, s.heads * s.headDim]);
    if (s.oBias) t[`${p}self_attn.o_proj.bias`] = tensor(rand, [s.hidden]);
    t[`${p}post_attention_layernorm.weight`] = gain(rand, s.hidden);
    t[`${p}mlp.gate_proj.weight`] = tensor(rand, [s.intermediate, s.hidden]);
    t[`${p}mlp.up_proj.weight`] = tensor(rand, [s.intermediate, s.hidden]);
    t[`${p}mlp.down_proj.weight`] = tensor(rand, [s.hidden, s.intermediate]);
  }
  t['model.norm.weight'] = gain(rand, s.hidden);
  if (s.lmHead) t['lm_head.weight'] = tensor(rand, [s.vocab, s.hidden], 1);
  return t;
}

export interface Gpt2Shape {
  vocab: number;
  hidden: number;
  layers: number;
  positions: number;
  inner: number;
  /** Save as GPT2Model does (no "transformer." prefix). */
  bare?: boolean;
}

export function gpt2Tensors(s: Gpt2Shape, seed: number): FixtureTensors {
  const rand = dyadicRandom(seed);
  const pre = s.bare ? '' : 'transformer.';
  const H = s.hidden;
  const t: FixtureTensors = {
    [`${pre}wte.weight`]: tensor(rand, [s.vocab, H], 1),
    [`${pre}wpe.weight`]: tensor(rand, [s.positions, H], 0.5),
  };
  for (let i = 0; i < s.layers; i++) {
    const p = `${pre}h.${i}.`;
    t[`${p}ln_1.weight`] = gain(rand, H);
    t[`${p}ln_1.bias`] = tensor(rand, [H], 0.125);
    t[`${p}attn.c_attn.weight`] = tensor(rand, [H, 3 * H]);
    t[`${p}attn.c_attn.bias`] = tensor(rand, [3 * H], 0.125);
    t[`${p}attn.c_proj.weight`] = tensor(rand, [H, H]);
    t[`${p}attn.c_proj.bias`] = tensor(rand, [H], 0.125);
    t[`${p}ln_2.weight`] = gain(rand, H);
    t[`${p}ln_2.bias`] = tensor(rand, [H], 0.125);
    t[`${p}mlp.c_fc.weight`] = tensor(rand, [H, s.inner]);
    t[`${p}mlp.c_fc.bias`] = tensor(rand, [s.inner], 0.125);
    t[`${p}mlp.c_proj.weight`] = tensor(rand, [s.inner, H]);
    t[`${p}mlp.c_proj.bias`] = tensor(rand, [H], 0.125);
    // The causal-mask buffer old GPT-2 checkpoints carry; the reference must skip it.
    t[`${p}attn.bias`] = { shape: [1, 1, 2, 2], values: [1, 0, 1, 1] };
  }
  t[`${pre}ln_f.weight`] = gain(rand, H);
  t[`${pre}ln_f.bias`] = tensor(rand, [H], 0.125);
  return t;
}

export interface BloomShape {
  vocab: number;
  hidden: number;
  layers: number;
}

export function bloomTensors(s: BloomShape, seed: number): FixtureTensors {
  const rand = dyadicRandom(seed);
  const H = s.hidden;
  const t: FixtureTensors = {
    'transformer.word_embeddings.weight': tensor(rand, [s.vocab, H], 1),
    'transformer.word_embeddings_layernorm.weight': gain(rand, H),
    'transformer.word_embeddings_layernorm.bias': tensor(rand, [H], 0.125),
  };
  for (let i = 0; i < s.layers; i++) {
    const p = `transformer.h.${i}.`;
    t[`${p}input_layernorm.weight`] = gain(rand, H);
    t[`${p}input_layernorm.bias`] = tensor(rand, [H], 0.125);
    t[`${p}self_attention.query_key_value.weight`] = tensor(rand, [3 * H, H]);
    t[`${p}self_attention.query_key_value.bias`] = tensor(rand, [3 * H], 0.125);
    t[`${p}self_attention.dense.weight`] = tensor(rand, [H, H]);
    t[`${p}self_attention.dense.bias`] = tensor(rand, [H], 0.125);
    t[`${p}post_attention_layernorm.weight`] = gain(rand, H);
    t[`${p}post_attention_layernorm.bias`] = tensor(rand, [H], 0.125);
    t[`${p}mlp.dense_h_to_4h.weight`] = tensor(rand, [4 * H, H]);
    t[`${p}mlp.dense_h_to_4h.bias`] = tensor(rand, [4 * H], 0.125);
    t[`${p}mlp.dense_4h_to_h.weight`] = tensor(rand, [H, 4 * H]);
    t[`${p}mlp.dense_4h_to_h.bias`] = tensor(rand, [H], 0.125);
  }
  t['transformer.ln_f.weight'] = gain(rand, H);
  t['transformer.ln_f.bias'] = tensor(rand, [H], 0.125);
  return t;
}
