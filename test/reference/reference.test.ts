// Tests of the float64 reference itself, so that it cannot be silently wrong
// when the GPU kernels and model are checked against it.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { add, layerNorm, matVec, rowOf, type Flat } from './inline-math.js';
import { tempDirs, writeRawSafetensors, type RawTensor } from './raw-safetensors.js';
import { loadRefBert, refBertForward } from './bert-f64.js';
import { expectClose, flattenNested, maxRelError } from './compare.js';
import {
  refAttentionPacked,
  refEmbedding,
  refErf,
  refErfc,
  refGeluErf,
  refLayerNorm,
  refLinear,
  refSoftmaxRows,
  refSplitFusedQkv,
  refTanh,
} from './ops-f64.js';
import { decodeBf16Bits, decodeF16Bits, readSafetensorsF64 } from './safetensors-f64.js';

// ---------------------------------------------------------------------------
// A tiny safetensors writer, local to the test (no padding, so tensor offsets
// and the data region start are deliberately unaligned).


function f32Tensor(name: string, shape: number[], values: ArrayLike<number>): RawTensor {
  const f32 = Float32Array.from(values);
  return { name, dtype: 'F32', shape, bytes: new Uint8Array(f32.buffer) };
}

const temp = tempDirs('petserve-ref-');
const makeTempDir = (): string => temp.make();
afterAll(() => temp.removeAll());

/** Deterministic values in [-scale, scale), rounded to f32 so the F32 file holds them exactly. */
function makeRandom(seed: number): (n: number, scale?: number, center?: number) => number[] {
  let state = seed >>> 0;
  const next = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  return (n, scale = 1, center = 0) =>
    Array.from({ length: n }, () => Math.fround(center + scale * (2 * next() - 1)));
}

// ---------------------------------------------------------------------------

describe('refErf', () => {
  it('matches known double-precision values', () => {
    const known: [number, number][] = [
      [0, 0],
      [0.5, 0.5204998778130465],
      [1, 0.8427007929497149],
      [2, 0.9953222650189527],
      [-3, -0.9999779095030014],
      [0.1, 0.1124629160182849],
      [-0.3, -0.3286267594591274],
    ];
    for (const [x, want] of known) expect(Math.abs(refErf(x) - want)).toBeLessThanOrEqual(2e-16 + 1e-15 * Math.abs(want));
  });

  it('agrees with the all-positive-term series 2/√π·e^(−x²)·Σ 2ⁿx^(2n+1)/(2n+1)!! across [−6, 6]', () => {
    const series = (x: number): number => {
      let term = x;
      let sum = x;
      for (let n = 1; n < 400; n++) {
        term *= (2 * x * x) / (2 * n + 1);
        sum += term;
        if (Math.abs(term) < 1e-18 * Math.abs(sum)) break;
      }
      return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
    };
    for (let x = -6; x <= 6; x += 0.0371) {
      expect(Math.abs(refErf(x) - series(x))).toBeLessThan(1e-14);
      expect(refErf(-x)).toBe(-refErf(x));
    }
  });

  it('keeps erfc accurate in the tail', () => {
    // erfc(5) = 1.5374597944280351e-12, erfc(10) = 2.088487583762545e-45
    expect(Math.abs(refErfc(5) / 1.5374597944280351e-12 - 1)).toBeLessThan(1e-14);
    expect(Math.abs(refErfc(10) / 2.088487583762545e-45 - 1)).toBeLessThan(1e-14);
    expect(refErfc(-1)).toBeCloseTo(1.842700792949715, 15);
  });
});

describe('refGeluErf and refTanh', () => {
  it('GELU equals v·Φ(v) at known points, for scalars and arrays', () => {
    // Φ(1) = 0.8413447460685429, Φ(−1) = 0.15865525393145707
    expect(refGeluErf(1)).toBeCloseTo(0.8413447460685429, 15);
    expect(refGeluErf(-1)).toBeCloseTo(-0.15865525393145707, 15);
    expect(refGeluErf(0)).toBe(0);
    const arr = refGeluErf([2, -2]);
    expect(arr[0]).toBeCloseTo(2 * 0.9772498680518208, 14);
    expect(arr[1]).toBeCloseTo(-2 * 0.022750131948179195, 14);
  });

  it('tanh is Math.tanh elementwise', () => {
    expect(refTanh(0.3)).toBe(Math.tanh(0.3));
    expect(Array.from(refTanh([0.3, -2]))).toEqual([Math.tanh(0.3), Math.tanh(-2)]);
  });
});

describe('refLinear', () => {
  it('computes x·wᵀ + b with w stored [outDim, inDim]', () => {
    // x = [[1, 2]], w = [[1, 0], [0, 1], [1, 1]], b = [10, 20, 30]
    const y = refLinear([1, 2], 1, 2, [1, 0, 0, 1, 1, 1], [10, 20, 30], 3);
    expect(Array.from(y)).toEqual([11, 22, 33]);
    expect(Array.from(refLinear([1, 2, 3, 4], 2, 2, [2, -1], null, 1))).toEqual([0, 2]);
  });

  it('rejects mis-sized inputs', () => {
    expect(() => refLinear([1, 2, 3], 1, 2, [1, 1], null, 1)).toThrow(/length/);
  });
});

describe('refLayerNorm', () => {
  it('gives mean 0 and biased variance 1 per row with gamma 1, beta 0', () => {
    const rows = 3;
    const dim = 7;
    const x = makeRandom(1)(rows * dim, 5, 2);
    const y = refLayerNorm(x, rows, dim, new Array<number>(dim).fill(1), new Array<number>(dim).fill(0), 1e-12);
    for (let r = 0; r < rows; r++) {
      const row = Array.from(y.subarray(r * dim, (r + 1) * dim));
      const mean = row.reduce((a, b) => a + b, 0) / dim;
      const variance = row.reduce((a, b) => a + (b - mean) ** 2, 0) / dim;
      expect(Math.abs(mean)).toBeLessThan(1e-14);
      expect(Math.abs(variance - 1)).toBeLessThan(1e-10);
    }
  });

  it('applies gamma, beta and eps inside the square root', () => {
    // row [1, 3]: mean 2, biased variance 1 → normalized [-1, 1] / sqrt(1 + eps)
    const y = refLayerNorm([1, 3], 1, 2, [2, 3], [0.5, -0.5], 0.25);
    const s = 1 / Math.sqrt(1.25);
    expect(y[0]).toBeCloseTo(-2 * s + 0.5, 15);
    expect(y[1]).toBeCloseTo(3 * s - 0.5, 15);
  });
});

describe('refSoftmaxRows', () => {
  it('rows sum to 1 and are shift-invariant, even for large logits', () => {
    const x = [1, 2, 3, 1000, 1001, 1002, -5, 0, 5];
    const y = refSoftmaxRows(x, 3, 3);
    for (let r = 0; r < 3; r++) expect(y[3 * r]! + y[3 * r + 1]! + y[3 * r + 2]!).toBeCloseTo(1, 15);
    for (let c = 0; c < 3; c++) expect(y[c]).toBeCloseTo(y[3 + c]!, 15);
    expect(y[1]! / y[0]!).toBeCloseTo(Math.E, 13);
  });
});

describe('refEmbedding', () => {
  it('sums word, per-sequence position and token type rows, packed end to end', () => {
    const hidden = 2;
    const word = [0, 0, 1, 1, 2, 2, 3, 3]; // id i → [i, i]
    const pos = [0, 10, 0, 20, 0, 30]; // position p → [0, 10(p+1)]
    const type = [0, 0, 100, 100];
    const y = refEmbedding([[3, 1], [2]], [[0, 1], [1]], word, pos, type, hidden);
    expect(Array.from(y)).toEqual([3, 13, 101, 121, 102, 112]);
    const noTypes = refEmbedding([[3, 1], [2]], null, word, pos, type, hidden);
    expect(Array.from(noTypes)).toEqual([3, 13, 1, 21, 2, 12]);
    expect(() => refEmbedding([[4]], null, word, pos, type, hidden)).toThrow(/out of range/);
    expect(() => refEmbedding([[1, 1, 1, 1]], null, word, pos, type, hidden)).toThrow(/positions/);
  });
});

describe('refAttentionPacked', () => {
  it('returns v for a one-token sequence, in every head', () => {
    const rand = makeRandom(7);
    const [q, k, v] = [rand(6), rand(6), rand(6)];
    expect(Array.from(refAttentionPacked(q, k, v, [1], 3, 2))).toEqual(v);
  });

  it('matches a hand-computed two-token example', () => {
    // one head, headDim 1: scores for both queries are [0, ln 3] → probs [1/4, 3/4]
    const q = [1, 1];
    const k = [0, Math.log(3)];
    const v = [4, 8];
    const ctx = refAttentionPacked(q, k, v, [2], 1, 1);
    expect(ctx[0]).toBeCloseTo(7, 14);
    expect(ctx[1]).toBeCloseTo(7, 14);
    // headDim 4 scales scores by 1/2: q·k = 2·ln 3 over four dims → ln 3 again
    const q4 = [1, 1, 1, 1, 1, 1, 1, 1];
    const k4 = [0, 0, 0, 0, Math.log(3) / 2, Math.log(3) / 2, Math.log(3) / 2, Math.log(3) / 2];
    const v4 = [4, 4, 4, 4, 8, 8, 8, 8];
    for (const c of refAttentionPacked(q4, k4, v4, [2], 1, 4)) expect(c).toBeCloseTo(7, 14);
  });

  it('keeps each sequence unaffected by the sequences packed beside it', () => {
    const heads = 2;
    const headDim = 3;
    const hidden = heads * headDim;
    const lengths = [3, 1, 4];
    const total = 8;
    const rand = makeRandom(11);
    const [q, k, v] = [rand(total * hidden), rand(total * hidden), rand(total * hidden)];
    const packed = refAttentionPacked(q, k, v, lengths, heads, headDim);
    let offset = 0;
    for (const len of lengths) {
      const rows = (a: number[]): number[] => a.slice(offset * hidden, (offset + len) * hidden);
      const alone = refAttentionPacked(rows(q), rows(k), rows(v), [len], heads, headDim);
      expect(Array.from(packed.subarray(offset * hidden, (offset + len) * hidden))).toEqual(Array.from(alone));
      offset += len;
    }
  });

  it('splits a fused q|k|v projection row by row', () => {
    const { q, k, v } = refSplitFusedQkv([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 2, 2);
    expect([Array.from(q), Array.from(k), Array.from(v)]).toEqual([
      [1, 2, 7, 8],
      [3, 4, 9, 10],
      [5, 6, 11, 12],
    ]);
  });
});

describe('readSafetensorsF64', () => {
  it('decodes F16 and BF16 bit patterns', () => {
    expect(decodeF16Bits(0x3c00)).toBe(1);
    expect(decodeF16Bits(0xc000)).toBe(-2);
    expect(decodeF16Bits(0x7bff)).toBe(65504);
    expect(decodeF16Bits(0x0001)).toBe(2 ** -24);
    expect(decodeF16Bits(0x3555)).toBe(0.333251953125);
    expect(decodeF16Bits(0x7c00)).toBe(Infinity);
    expect(Object.is(decodeF16Bits(0x8000), -0)).toBe(true);
    expect(decodeF16Bits(0x7e00)).toBeNaN();
    expect(decodeBf16Bits(0x3f80)).toBe(1);
    expect(decodeBf16Bits(0xc040)).toBe(-3);
    expect(decodeBf16Bits(0x3eab)).toBe(0.333984375);
    expect(decodeBf16Bits(0x0001)).toBe(2 ** -133);
    expect(decodeBf16Bits(0xff80)).toBe(-Infinity);
    // every normal bf16 equals the f32 with the same top 16 bits
    const view = new DataView(new ArrayBuffer(4));
    for (let bits = 0x0080; bits < 0x7f80; bits += 97) {
      view.setUint32(0, bits << 16);
      expect(decodeBf16Bits(bits)).toBe(view.getFloat32(0));
    }
  });

  it('reads F32, F16, BF16, F64 and I64 tensors at unaligned offsets', () => {
    const dir = makeTempDir();
    const path = join(dir, 'mixed.safetensors');
    const f16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x3555]).buffer);
    const bf16 = new Uint8Array(new Uint16Array([0x3f80, 0xc040]).buffer);
    const f64 = new Uint8Array(new Float64Array([Math.PI, -1e-300]).buffer);
    const i64 = new Uint8Array(new BigInt64Array([0n, 5n, -7n]).buffer);
    writeRawSafetensors(path, [
      { name: 'half', dtype: 'F16', shape: [3], bytes: f16 },
      f32Tensor('single', [2, 2], [0.5, -1.25, 3, 1e-3]),
      { name: 'brain', dtype: 'BF16', shape: [1, 2], bytes: bf16 },
      { name: 'double', dtype: 'F64', shape: [2], bytes: f64 },
      { name: 'ids', dtype: 'I64', shape: [1, 3], bytes: i64 },
    ]);
    const tensors = readSafetensorsF64(path);
    expect([...tensors.keys()].sort()).toEqual(['brain', 'double', 'half', 'ids', 'single']);
    expect(tensors.get('half')).toEqual({ shape: [3], data: new Float64Array([1, -2, 0.333251953125]) });
    expect(tensors.get('single')).toEqual({ shape: [2, 2], data: new Float64Array([0.5, -1.25, 3, Math.fround(1e-3)]) });
    expect(tensors.get('brain')).toEqual({ shape: [1, 2], data: new Float64Array([1, -3]) });
    expect(tensors.get('double')).toEqual({ shape: [2], data: new Float64Array([Math.PI, -1e-300]) });
    expect(tensors.get('ids')).toEqual({ shape: [1, 3], data: new Float64Array([0, 5, -7]) });
  });

  it('rejects a tensor whose byte span does not match its shape', () => {
    const dir = makeTempDir();
    const path = join(dir, 'bad.safetensors');
    writeRawSafetensors(path, [{ name: 'x', dtype: 'F32', shape: [3], bytes: new Uint8Array(8) }]);
    expect(() => readSafetensorsF64(path)).toThrow(/needs 12/);
  });
});

describe('compare helpers', () => {
  it('maxRelError divides the worst absolute difference by max|expected|', () => {
    expect(maxRelError([1, 0.1, -4], [1, 0, -4])).toBeCloseTo(0.1 / 4, 15);
    expect(maxRelError([0, 0], [0, 0])).toBe(0);
    expect(maxRelError([NaN, 0], [1, 0])).toBeNaN();
  });

  it('expectClose reports the worst element and rejects NaN', () => {
    expect(expectClose([1, 2.0001], [1, 2], 1e-4, 'ok')).toBeCloseTo(0.00005, 10);
    expect(() => expectClose([1, 2.1, 3.05], [1, 2, 3], 1e-3, 'gemm')).toThrow(
      /gemm: norm-relative error .* at index 1 \(actual 2.1, expected 2/,
    );
    expect(() => expectClose([1, NaN, NaN], [1, 2, 3], 1, 'unwritten')).toThrow(/2 of 3 .*NaN.*index 1/);
    expect(() => expectClose([1], [1, 2], 1, 'short')).toThrow(/length mismatch/);
  });

  it('flattenNested flattens [seq][token][hidden] row-major', () => {
    expect(Array.from(flattenNested([[[1, 2], [3, 4]], [[5, 6]]]))).toEqual([1, 2, 3, 4, 5, 6]);
  });
});

// ---------------------------------------------------------------------------
// Tiny BERT: hidden 4, 2 heads, intermediate 8, vocab 10, max positions 8,
// 1 layer, 3 labels. The expected values are computed below step by step with
// plain nested arrays, independently of ops-f64.

const H = 4;
const HEADS = 2;
const HEAD_DIM = 2;
const I = 8;
const VOCAB = 10;
const MAX_POS = 8;
const TYPES = 2;
const LABELS = 3;
const EPS = 1e-12;

const tinyConfig = {
  architectures: ['BertForSequenceClassification'],
  model_type: 'bert',
  hidden_size: H,
  num_hidden_layers: 1,
  num_attention_heads: HEADS,
  intermediate_size: I,
  hidden_act: 'gelu',
  layer_norm_eps: EPS,
  max_position_embeddings: MAX_POS,
  type_vocab_size: TYPES,
  vocab_size: VOCAB,
  position_embedding_type: 'absolute',
};

interface TinyWeights {
  word: Flat;
  pos: Flat;
  type: Flat;
  embLnG: Flat;
  embLnB: Flat;
  wq: Flat;
  bq: Flat;
  wk: Flat;
  bk: Flat;
  wv: Flat;
  bv: Flat;
  wo: Flat;
  bo: Flat;
  attnLnG: Flat;
  attnLnB: Flat;
  wi: Flat;
  bi: Flat;
  wout: Flat;
  bout: Flat;
  outLnG: Flat;
  outLnB: Flat;
  wp: Flat;
  bp: Flat;
  wc: Flat;
  bc: Flat;
}

function makeTinyWeights(): TinyWeights {
  const rand = makeRandom(2024);
  return {
    word: rand(VOCAB * H),
    pos: rand(MAX_POS * H, 0.5),
    type: rand(TYPES * H, 0.5),
    embLnG: rand(H, 0.2, 1),
    embLnB: rand(H, 0.1),
    wq: rand(H * H, 0.8),
    bq: rand(H, 0.1),
    wk: rand(H * H, 0.8),
    bk: rand(H, 0.1),
    wv: rand(H * H, 0.8),
    bv: rand(H, 0.1),
    wo: rand(H * H, 0.8),
    bo: rand(H, 0.1),
    attnLnG: rand(H, 0.2, 1),
    attnLnB: rand(H, 0.1),
    wi: rand(I * H, 0.8),
    bi: rand(I, 0.1),
    wout: rand(H * I, 0.5),
    bout: rand(H, 0.1),
    outLnG: rand(H, 0.2, 1),
    outLnB: rand(H, 0.1),
    wp: rand(H * H, 0.8),
    bp: rand(H, 0.1),
    wc: rand(LABELS * H, 0.8),
    bc: rand(LABELS, 0.1),
  };
}

/** Names as BertForSequenceClassification saves them, or the old unprefixed gamma/beta spelling. */
function tinyTensors(w: TinyWeights, layout: 'classification' | 'legacy-base'): RawTensor[] {
  const prefix = layout === 'classification' ? 'bert.' : '';
  const lnW = layout === 'classification' ? 'weight' : 'gamma';
  const lnB = layout === 'classification' ? 'bias' : 'beta';
  const l = `${prefix}encoder.layer.0.`;
  const tensors = [
    f32Tensor(`${prefix}embeddings.word_embeddings.weight`, [VOCAB, H], w.word),
    f32Tensor(`${prefix}embeddings.position_embeddings.weight`, [MAX_POS, H], w.pos),
    f32Tensor(`${prefix}embeddings.token_type_embeddings.weight`, [TYPES, H], w.type),
    f32Tensor(`${prefix}embeddings.LayerNorm.${lnW}`, [H], w.embLnG),
    f32Tensor(`${prefix}embeddings.LayerNorm.${lnB}`, [H], w.embLnB),
    f32Tensor(`${l}attention.self.query.weight`, [H, H], w.wq),
    f32Tensor(`${l}attention.self.query.bias`, [H], w.bq),
    f32Tensor(`${l}attention.self.key.weight`, [H, H], w.wk),
    f32Tensor(`${l}attention.self.key.bias`, [H], w.bk),
    f32Tensor(`${l}attention.self.value.weight`, [H, H], w.wv),
    f32Tensor(`${l}attention.self.value.bias`, [H], w.bv),
    f32Tensor(`${l}attention.output.dense.weight`, [H, H], w.wo),
    f32Tensor(`${l}attention.output.dense.bias`, [H], w.bo),
    f32Tensor(`${l}attention.output.LayerNorm.${lnW}`, [H], w.attnLnG),
    f32Tensor(`${l}attention.output.LayerNorm.${lnB}`, [H], w.attnLnB),
    f32Tensor(`${l}intermediate.dense.weight`, [I, H], w.wi),
    f32Tensor(`${l}intermediate.dense.bias`, [I], w.bi),
    f32Tensor(`${l}output.dense.weight`, [H, I], w.wout),
    f32Tensor(`${l}output.dense.bias`, [H], w.bout),
    f32Tensor(`${l}output.LayerNorm.${lnW}`, [H], w.outLnG),
    f32Tensor(`${l}output.LayerNorm.${lnB}`, [H], w.outLnB),
    f32Tensor(`${prefix}pooler.dense.weight`, [H, H], w.wp),
    f32Tensor(`${prefix}pooler.dense.bias`, [H], w.bp),
  ];
  if (layout === 'classification') {
    tensors.push(f32Tensor('classifier.weight', [LABELS, H], w.wc), f32Tensor('classifier.bias', [LABELS], w.bc));
  } else {
    // old checkpoints also carry the position_ids buffer as int64
    const ids = new Uint8Array(new BigInt64Array(Array.from({ length: MAX_POS }, (_, i) => BigInt(i))).buffer);
    tensors.push({ name: 'embeddings.position_ids', dtype: 'I64', shape: [1, MAX_POS], bytes: ids });
  }
  return tensors;
}

function writeTinyModel(w: TinyWeights, layout: 'classification' | 'legacy-base', config: object = tinyConfig): string {
  const dir = makeTempDir();
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  writeRawSafetensors(join(dir, 'model.safetensors'), tinyTensors(w, layout));
  return dir;
}

// Inline step-by-step math on plain arrays, written separately from ops-f64.
const gelu = (v: number): number => 0.5 * v * (1 + refErf(v / Math.SQRT2));
const row = rowOf;

/** One-token sequence: attention over a single key is exactly v. */
function tinyForwardOneToken(w: TinyWeights, id: number, typeId: number): { hidden: Flat; pooled: Flat; logits: Flat } {
  const x0 = layerNorm(add(add(row(w.word, id, H), row(w.pos, 0, H)), row(w.type, typeId, H)), w.embLnG, w.embLnB);
  const context = matVec(w.wv, H, H, x0, w.bv);
  const h1 = layerNorm(add(matVec(w.wo, H, H, context, w.bo), x0), w.attnLnG, w.attnLnB);
  const inter = matVec(w.wi, I, H, h1, w.bi).map(gelu);
  const x1 = layerNorm(add(matVec(w.wout, H, I, inter, w.bout), h1), w.outLnG, w.outLnB);
  const pooled = matVec(w.wp, H, H, x1, w.bp).map(Math.tanh);
  const logits = matVec(w.wc, LABELS, H, pooled, w.bc);
  return { hidden: x1, pooled, logits };
}

/** Any length: per-head softmax(q·k/√d)·v written out with nested arrays. */
function tinyForward(w: TinyWeights, ids: number[], types: number[]): { hidden: Flat[]; pooled: Flat; logits: Flat } {
  const x0 = ids.map((id, t) =>
    layerNorm(add(add(row(w.word, id, H), row(w.pos, t, H)), row(w.type, types[t]!, H)), w.embLnG, w.embLnB),
  );
  const q = x0.map((x) => matVec(w.wq, H, H, x, w.bq));
  const k = x0.map((x) => matVec(w.wk, H, H, x, w.bk));
  const v = x0.map((x) => matVec(w.wv, H, H, x, w.bv));
  const context = ids.map((_, i) => {
    const out = new Array<number>(H).fill(0);
    for (let h = 0; h < HEADS; h++) {
      const cols = Array.from({ length: HEAD_DIM }, (_, d) => h * HEAD_DIM + d);
      const scores = ids.map((__, j) => cols.reduce((s, c) => s + q[i]![c]! * k[j]![c]!, 0) / Math.sqrt(HEAD_DIM));
      const exps = scores.map((s) => Math.exp(s));
      const total = exps.reduce((a, b) => a + b, 0);
      exps.forEach((e, j) => cols.forEach((c) => (out[c] = out[c]! + (e / total) * v[j]![c]!)));
    }
    return out;
  });
  const h1 = context.map((c, t) => layerNorm(add(matVec(w.wo, H, H, c, w.bo), x0[t]!), w.attnLnG, w.attnLnB));
  const x1 = h1.map((h) => {
    const inter = matVec(w.wi, I, H, h, w.bi).map(gelu);
    return layerNorm(add(matVec(w.wout, H, I, inter, w.bout), h), w.outLnG, w.outLnB);
  });
  const pooled = matVec(w.wp, H, H, x1[0]!, w.bp).map(Math.tanh);
  return { hidden: x1, pooled, logits: matVec(w.wc, LABELS, H, pooled, w.bc) };
}

describe('tiny BERT reference', () => {
  const weights = makeTinyWeights();

  it('loads the classification layout: bert. prefix stripped, numLabels from classifier rows', () => {
    const model = loadRefBert(writeTinyModel(weights, 'classification'));
    expect(model.numLabels).toBe(LABELS);
    expect(model.config).toEqual({
      hiddenSize: H,
      numHiddenLayers: 1,
      numAttentionHeads: HEADS,
      intermediateSize: I,
      hiddenAct: 'gelu',
      layerNormEps: EPS,
      maxPositionEmbeddings: MAX_POS,
      typeVocabSize: TYPES,
      vocabSize: VOCAB,
    });
    expect(model.tensors.get('encoder.layer.0.attention.output.LayerNorm.weight')?.shape).toEqual([H]);
    expect(model.tensors.has('bert.embeddings.word_embeddings.weight')).toBe(false);
  });

  it('matches step-by-step math for a one-token sequence, where attention is v', () => {
    const model = loadRefBert(writeTinyModel(weights, 'classification'));
    for (const [id, typeId] of [
      [3, 0],
      [9, 1],
    ] as const) {
      const want = tinyForwardOneToken(weights, id, typeId);
      const got = refBertForward(model, [[id]], [[typeId]]);
      expectClose(got.lastHiddenState[0]![0]!, want.hidden, 1e-13, `hidden id ${id}`);
      expectClose(got.poolerOutput[0]!, want.pooled, 1e-13, `pooled id ${id}`);
      expectClose(got.logits![0]!, want.logits, 1e-13, `logits id ${id}`);
    }
  });

  it('matches step-by-step math for multi-token sequences, each run on its own', () => {
    const model = loadRefBert(writeTinyModel(weights, 'classification'));
    const inputIds = [
      [2, 7, 7, 0, 5],
      [1],
      [9, 4, 6],
    ];
    const tokenTypeIds = [[0, 0, 1, 1, 1], [0], [0, 1, 1]];
    const got = refBertForward(model, inputIds, tokenTypeIds);
    inputIds.forEach((ids, s) => {
      const want = tinyForward(weights, ids, tokenTypeIds[s]!);
      expectClose(flattenNested(got.lastHiddenState[s]!), want.hidden.flat(), 1e-13, `hidden seq ${s}`);
      expectClose(got.poolerOutput[s]!, want.pooled, 1e-13, `pooled seq ${s}`);
      expectClose(got.logits![s]!, want.logits, 1e-13, `logits seq ${s}`);
    });
    // the single-token path of the general math agrees with the one-token shortcut
    expectClose(tinyForward(weights, [1], [0]).logits, tinyForwardOneToken(weights, 1, 0).logits, 1e-14, 'one-token');
    // hiddenStates: [embeddings, layer 0], the last equal to lastHiddenState
    expect(got.hiddenStates).toHaveLength(2);
    expect(got.hiddenStates[1]).toEqual(got.lastHiddenState);
  });

  it('defaults token types to 0 and gives the same result alone or batched', () => {
    const model = loadRefBert(writeTinyModel(weights, 'classification'));
    const batched = refBertForward(model, [[4, 2, 8], [6, 1]]);
    const alone = refBertForward(model, [[6, 1]], [[0, 0]]);
    expect(batched.lastHiddenState[1]).toEqual(alone.lastHiddenState[0]);
    expect(batched.logits![1]).toEqual(alone.logits![0]);
  });

  it('loads unprefixed LayerNorm.gamma/beta names and returns null logits without a classifier', () => {
    const legacy = loadRefBert(writeTinyModel(weights, 'legacy-base'));
    const modern = loadRefBert(writeTinyModel(weights, 'classification'));
    expect(legacy.numLabels).toBe(0);
    const inputIds = [[5, 3, 1]];
    const a = refBertForward(legacy, inputIds);
    const b = refBertForward(modern, inputIds);
    expect(a.logits).toBeNull();
    expect(a.lastHiddenState).toEqual(b.lastHiddenState);
    expect(a.poolerOutput).toEqual(b.poolerOutput);
  });

  it('rejects non-erf activations, missing tensors and over-long sequences', () => {
    expect(() => loadRefBert(writeTinyModel(weights, 'classification', { ...tinyConfig, hidden_act: 'gelu_new' }))).toThrow(
      /hidden_act/,
    );
    expect(() => loadRefBert(writeTinyModel(weights, 'classification', { ...tinyConfig, num_hidden_layers: 2 }))).toThrow(
      /encoder\.layer\.1\./,
    );
    const model = loadRefBert(writeTinyModel(weights, 'classification'));
    expect(() => refBertForward(model, [new Array<number>(MAX_POS + 1).fill(1)])).toThrow(/max_position_embeddings/);
  });
});
