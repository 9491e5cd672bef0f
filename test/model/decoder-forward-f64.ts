// A plain float64 forward pass of the random decoder checkpoints, written from
// the transformers modelling code, only to check that their weights make a
// usable model (greedy decoding that does not collapse onto one token). RoPE
// scaling is ignored: it moves positions, not the spread of the logits. This
// is not the engine's oracle (that lives in test/reference/).

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { SafetensorsFile } from '../../src/model/safetensors.js';

type Config = Record<string, unknown>;
type Weights = (name: string) => Float64Array;

/** y = W x (+ b) with torch.nn.Linear's W [out, in]. */
function linear(w: Float64Array, x: Float64Array, b?: Float64Array): Float64Array {
  const inDim = x.length;
  const out = new Float64Array(w.length / inDim);
  for (let o = 0; o < out.length; o++) {
    let s = b ? b[o]! : 0;
    for (let i = 0; i < inDim; i++) s += w[o * inDim + i]! * x[i]!;
    out[o] = s;
  }
  return out;
}

/** y = x W + b with GPT-2's Conv1D W [in, out]. */
function conv1d(w: Float64Array, x: Float64Array, b: Float64Array): Float64Array {
  const out = Float64Array.from(b);
  for (let i = 0; i < x.length; i++) {
    for (let o = 0; o < out.length; o++) out[o] = out[o]! + x[i]! * w[i * out.length + o]!;
  }
  return out;
}

function rmsNorm(x: Float64Array, g: Float64Array, eps: number): Float64Array {
  const ms = x.reduce((s, v) => s + v * v, 0) / x.length;
  return x.map((v, i) => (v / Math.sqrt(ms + eps)) * g[i]!);
}

function layerNorm(x: Float64Array, g: Float64Array, b: Float64Array, eps: number): Float64Array {
  const mean = x.reduce((s, v) => s + v, 0) / x.length;
  const variance = x.reduce((s, v) => s + (v - mean) ** 2, 0) / x.length;
  return x.map((v, i) => ((v - mean) / Math.sqrt(variance + eps)) * g[i]! + b[i]!);
}

const geluTanh = (v: number): number => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
const silu = (v: number): number => v / (1 + Math.exp(-v));
const add = (a: Float64Array, b: Float64Array): Float64Array => a.map((v, i) => v + b[i]!);

/** Causal attention of the last query over all keys; per-head slices of width d. */
function attend(
  qs: Float64Array[],
  ks: Float64Array[],
  vs: Float64Array[],
  heads: number,
  kvHeads: number,
  d: number,
  bias: (head: number, key: number) => number,
): Float64Array[] {
  return qs.map((q, t) => {
    const out = new Float64Array(heads * d);
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / (heads / kvHeads));
      const scores: number[] = [];
      for (let j = 0; j <= t; j++) {
        let s = 0;
        for (let i = 0; i < d; i++) s += q[h * d + i]! * ks[j]![kvh * d + i]!;
        scores.push(s / Math.sqrt(d) + bias(h, j));
      }
      const max = Math.max(...scores);
      const p = scores.map((s) => Math.exp(s - max));
      const z = p.reduce((a, b) => a + b, 0);
      for (let j = 0; j <= t; j++) {
        for (let i = 0; i < d; i++) out[h * d + i] = out[h * d + i]! + (p[j]! / z) * vs[j]![kvh * d + i]!;
      }
    }
    return out;
  });
}

/** Rotate-half RoPE (transformers' apply_rotary_pos_emb) on every head of x. */
function rope(x: Float64Array, heads: number, d: number, position: number, theta: number): Float64Array {
  const out = Float64Array.from(x);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < d / 2; i++) {
      const angle = position * theta ** (-(2 * i) / d);
      const a = x[h * d + i]!;
      const b = x[h * d + i + d / 2]!;
      out[h * d + i] = a * Math.cos(angle) - b * Math.sin(angle);
      out[h * d + i + d / 2] = b * Math.cos(angle) + a * Math.sin(angle);
    }
  }
  return out;
}

/** BLOOM's build_alibi_tensor slopes, including the extra ones for a head count that is not a power of two. */
export function alibiSlopes(heads: number): number[] {
  const closest = 2 ** Math.floor(Math.log2(heads));
  const base = 2 ** -(2 ** -(Math.log2(closest) - 3));
  const slopes = Array.from({ length: closest }, (_, i) => base ** (i + 1));
  const extraBase = 2 ** -(2 ** -(Math.log2(2 * closest) - 3));
  for (let i = 0; i < heads - closest; i++) slopes.push(extraBase ** (2 * i + 1));
  return slopes;
}

function row(table: Float64Array, id: number, width: number): Float64Array {
  return table.slice(id * width, (id + 1) * width);
}

/** Logits of the last position for `ids`. */
function forward(config: Config, w: Weights, ids: number[]): Float64Array {
  const type = config['model_type'];
  if (type === 'gpt2') {
    const e = config['n_embd'] as number;
    const heads = config['n_head'] as number;
    const eps = config['layer_norm_epsilon'] as number;
    const wte = w('wte.weight');
    let xs = ids.map((id, t) => add(row(wte, id, e), row(w('wpe.weight'), t, e)));
    for (let l = 0; l < (config['n_layer'] as number); l++) {
      const p = `h.${l}.`;
      const qkv = xs.map((x) => conv1d(w(`${p}attn.c_attn.weight`), layerNorm(x, w(`${p}ln_1.weight`), w(`${p}ln_1.bias`), eps), w(`${p}attn.c_attn.bias`)));
      const att = attend(qkv.map((v) => v.slice(0, e)), qkv.map((v) => v.slice(e, 2 * e)), qkv.map((v) => v.slice(2 * e)), heads, heads, e / heads, () => 0);
      xs = xs.map((x, t) => add(x, conv1d(w(`${p}attn.c_proj.weight`), att[t]!, w(`${p}attn.c_proj.bias`))));
      xs = xs.map((x) => {
        const h = conv1d(w(`${p}mlp.c_fc.weight`), layerNorm(x, w(`${p}ln_2.weight`), w(`${p}ln_2.bias`), eps), w(`${p}mlp.c_fc.bias`));
        return add(x, conv1d(w(`${p}mlp.c_proj.weight`), h.map(geluTanh), w(`${p}mlp.c_proj.bias`)));
      });
    }
    return linear(wte, layerNorm(xs.at(-1)!, w('ln_f.weight'), w('ln_f.bias'), eps));
  }
  if (type === 'bloom') {
    const hs = config['hidden_size'] as number;
    const heads = config['n_head'] as number;
    const d = hs / heads;
    const eps = config['layer_norm_epsilon'] as number;
    const slopes = alibiSlopes(heads);
    const emb = w('word_embeddings.weight');
    let xs = ids.map((id) => layerNorm(row(emb, id, hs), w('word_embeddings_layernorm.weight'), w('word_embeddings_layernorm.bias'), eps));
    for (let l = 0; l < (config['n_layer'] as number); l++) {
      const p = `h.${l}.`;
      const qkv = xs.map((x) =>
        linear(w(`${p}self_attention.query_key_value.weight`), layerNorm(x, w(`${p}input_layernorm.weight`), w(`${p}input_layernorm.bias`), eps), w(`${p}self_attention.query_key_value.bias`)),
      );
      // Rows are [head][q|k|v][d].
      const part = (v: Float64Array, which: number): Float64Array => {
        const out = new Float64Array(hs);
        for (let h = 0; h < heads; h++) out.set(v.slice((3 * h + which) * d, (3 * h + which + 1) * d), h * d);
        return out;
      };
      const att = attend(qkv.map((v) => part(v, 0)), qkv.map((v) => part(v, 1)), qkv.map((v) => part(v, 2)), heads, heads, d, (h, j) => slopes[h]! * j);
      xs = xs.map((x, t) => add(x, linear(w(`${p}self_attention.dense.weight`), att[t]!, w(`${p}self_attention.dense.bias`))));
      xs = xs.map((x) => {
        const h = linear(w(`${p}mlp.dense_h_to_4h.weight`), layerNorm(x, w(`${p}post_attention_layernorm.weight`), w(`${p}post_attention_layernorm.bias`), eps), w(`${p}mlp.dense_h_to_4h.bias`));
        return add(x, linear(w(`${p}mlp.dense_4h_to_h.weight`), h.map(geluTanh), w(`${p}mlp.dense_4h_to_h.bias`)));
      });
    }
    return linear(emb, layerNorm(xs.at(-1)!, w('ln_f.weight'), w('ln_f.bias'), eps));
  }
  // llama, qwen2, mistral
  const hs = config['hidden_size'] as number;
  const heads = config['num_attention_heads'] as number;
  const kvHeads = config['num_key_value_heads'] as number;
  const d = (config['head_dim'] as number | undefined) ?? hs / heads;
  const eps = config['rms_norm_eps'] as number;
  const theta = config['rope_theta'] as number;
  const maybe = (name: string): Float64Array | undefined => (type === 'qwen2' ? w(name) : undefined);
  const emb = w('model.embed_tokens.weight');
  let xs = ids.map((id) => row(emb, id, hs));
  for (let l = 0; l < (config['num_hidden_layers'] as number); l++) {
    const p = `model.layers.${l}.`;
    const normed = xs.map((x) => rmsNorm(x, w(`${p}input_layernorm.weight`), eps));
    const proj = (name: string): Float64Array[] => normed.map((x) => linear(w(`${p}self_attn.${name}.weight`), x, maybe(`${p}self_attn.${name}.bias`)));
    const qs = proj('q_proj').map((q, t) => rope(q, heads, d, t, theta));
    const ks = proj('k_proj').map((k, t) => rope(k, kvHeads, d, t, theta));
    const att = attend(qs, ks, proj('v_proj'), heads, kvHeads, d, () => 0);
    xs = xs.map((x, t) => add(x, linear(w(`${p}self_attn.o_proj.weight`), att[t]!)));
    xs = xs.map((x) => {
      const h = rmsNorm(x, w(`${p}post_attention_layernorm.weight`), eps);
      const gate = linear(w(`${p}mlp.gate_proj.weight`), h);
      const up = linear(w(`${p}mlp.up_proj.weight`), h);
      return add(x, linear(w(`${p}mlp.down_proj.weight`), gate.map((g, i) => silu(g) * up[i]!)));
    });
  }
  const head = config['tie_word_embeddings'] ? emb : w('lm_head.weight');
  return linear(head, rmsNorm(xs.at(-1)!, w('model.norm.weight'), eps));
}

export interface DecoderRun {
  /** Logits after the prompt. */
  firstLogits: Float64Array;
  /** Greedily generated ids. */
  generated: number[];
}

/** Greedy decoding of `steps` tokens after `prompt` with checkpoint `dir`. */
export async function greedyDecode(dir: string, prompt: number[], steps: number): Promise<DecoderRun> {
  const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Config;
  const file = await SafetensorsFile.open(join(dir, 'model.safetensors'));
  const cache = new Map<string, Float64Array>();
  const w: Weights = (name) => {
    let t = cache.get(name);
    if (t === undefined) {
      t = Float64Array.from(file.readFloat32(name));
      cache.set(name, t);
    }
    return t;
  };
  const ids = [...prompt];
  let firstLogits: Float64Array | undefined;
  const generated: number[] = [];
  for (let step = 0; step < steps; step++) {
    const logits = forward(config, w, ids);
    firstLogits ??= logits;
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    generated.push(best);
    ids.push(best);
  }
  return { firstLogits: firstLogits!, generated };
}
