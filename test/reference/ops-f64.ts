// Float64 reference primitives for checking GPU kernels. Written for obviousness:
// plain loops over row-major arrays, no tiling, no fusion, no shared code with src/.
// Every function validates its sizes so that a mis-sized call fails loudly rather
// than producing a plausible-looking wrong reference.

function checkLength(name: string, actual: number, expected: number): void {
  if (actual !== expected) throw new Error(`${name}: expected length ${expected}, got ${actual}`);
}

/** y = x · wᵀ + b, with x [rows, inDim] and w [outDim, inDim] as torch.nn.Linear stores it. */
export function refLinear(
  x: ArrayLike<number>,
  rows: number,
  inDim: number,
  w: ArrayLike<number>,
  bias: ArrayLike<number> | null,
  outDim: number,
): Float64Array {
  checkLength('refLinear x', x.length, rows * inDim);
  checkLength('refLinear w', w.length, outDim * inDim);
  if (bias !== null) checkLength('refLinear bias', bias.length, outDim);
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let sum = 0;
      for (let i = 0; i < inDim; i++) sum += x[r * inDim + i]! * w[o * inDim + i]!;
      y[r * outDim + o] = sum + (bias === null ? 0 : bias[o]!);
    }
  }
  return y;
}

// W. J. Cody, "Rational Chebyshev approximations for the error function",
// Math. Comp. 23 (1969) 631-638, as transcribed in SPECFUN CALERF (TOMS 715).
// Three intervals: |x| <= 0.46875 approximates erf directly; 0.46875 < |x| <= 4
// and |x| > 4 approximate erfc, whose exp(-x²) factor is split into
// exp(-r²)·exp(-(x-r)(x+r)) with r = x rounded down to 1/16 to avoid losing the
// low bits of x² (the same trick as the original).
const ERF_A = [3.1611237438705656, 1.13864154151050156e2, 3.77485237685302021e2, 3.20937758913846947e3, 1.85777706184603153e-1];
const ERF_B = [2.36012909523441209e1, 2.44024637934444173e2, 1.28261652607737228e3, 2.84423683343917062e3];
const ERF_C = [
  5.64188496988670089e-1, 8.88314979438837594, 6.61191906371416295e1, 2.98635138197400131e2, 8.8195222124176909e2,
  1.71204761263407058e3, 2.05107837782607147e3, 1.23033935479799725e3, 2.15311535474403846e-8,
];
const ERF_D = [
  1.57449261107098347e1, 1.17693950891312499e2, 5.37181101862009858e2, 1.62138957456669019e3, 3.29079923573345963e3,
  4.36261909014324716e3, 3.43936767414372164e3, 1.23033935480374942e3,
];
const ERF_P = [
  3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
  6.58749161529837803e-4, 1.63153871373020978e-2,
];
const ERF_Q = [2.56852019228982242, 1.87295284992346047, 5.27905102951428412e-1, 6.05183413124413191e-2, 2.33520497626869185e-3];
const ONE_OVER_SQRT_PI = 5.6418958354775628695e-1;
const ERF_THRESHOLD = 0.46875;
const ERFC_UNDERFLOW = 26.543; // erfc(x) underflows to 0 in binary64 beyond this

function coeff(table: readonly number[], i: number): number {
  const c = table[i];
  if (c === undefined) throw new Error(`erf coefficient ${i} missing`);
  return c;
}

/** erfc(y) for y > 0.46875 (Cody's second and third intervals). */
function erfcTail(y: number): number {
  let result: number;
  if (y <= 4) {
    let num = coeff(ERF_C, 8) * y;
    let den = y;
    for (let i = 0; i < 7; i++) {
      num = (num + coeff(ERF_C, i)) * y;
      den = (den + coeff(ERF_D, i)) * y;
    }
    result = (num + coeff(ERF_C, 7)) / (den + coeff(ERF_D, 7));
  } else {
    if (y >= ERFC_UNDERFLOW) return 0;
    const z = 1 / (y * y);
    let num = coeff(ERF_P, 5) * z;
    let den = z;
    for (let i = 0; i < 4; i++) {
      num = (num + coeff(ERF_P, i)) * z;
      den = (den + coeff(ERF_Q, i)) * z;
    }
    result = (z * (num + coeff(ERF_P, 4))) / (den + coeff(ERF_Q, 4));
    result = (ONE_OVER_SQRT_PI - result) / y;
  }
  const rounded = Math.trunc(y * 16) / 16;
  const remainder = (y - rounded) * (y + rounded);
  return Math.exp(-rounded * rounded) * Math.exp(-remainder) * result;
}

/** Double-precision erf (Cody 1969), relative error ~1e-16. */
export function refErf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const y = Math.abs(x);
  if (y <= ERF_THRESHOLD) {
    const z = y > 1.11e-16 ? y * y : 0;
    let num = coeff(ERF_A, 4) * z;
    let den = z;
    for (let i = 0; i < 3; i++) {
      num = (num + coeff(ERF_A, i)) * z;
      den = (den + coeff(ERF_B, i)) * z;
    }
    return (x * (num + coeff(ERF_A, 3))) / (den + coeff(ERF_B, 3));
  }
  const erfAbs = 0.5 - erfcTail(y) + 0.5;
  return x < 0 ? -erfAbs : erfAbs;
}

/** Double-precision erfc, accurate in the tail where 1 - erf(x) would cancel. */
export function refErfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const y = Math.abs(x);
  if (y <= ERF_THRESHOLD) return 1 - refErf(x);
  const tail = erfcTail(y);
  return x < 0 ? 2 - tail : tail;
}

function geluErfScalar(v: number): number {
  // 0.5·v·(1 + erf(v/√2)) written as 0.5·v·erfc(-v/√2), which equals it exactly
  // and keeps full relative precision for large negative v.
  return 0.5 * v * refErfc(-v / Math.SQRT2);
}

/** Exact (erf) GELU, as torch.nn.functional.gelu with approximate='none' and HF "gelu". */
export function refGeluErf(v: number): number;
export function refGeluErf(v: ArrayLike<number>): Float64Array;
export function refGeluErf(v: number | ArrayLike<number>): number | Float64Array {
  if (typeof v === 'number') return geluErfScalar(v);
  return Float64Array.from(v, geluErfScalar);
}

export function refTanh(v: number): number;
export function refTanh(v: ArrayLike<number>): Float64Array;
export function refTanh(v: number | ArrayLike<number>): number | Float64Array {
  if (typeof v === 'number') return Math.tanh(v);
  return Float64Array.from(v, Math.tanh);
}

/** Elementwise a + b (residual connections). */
export function refAdd(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  checkLength('refAdd b', b.length, a.length);
  const y = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) y[i] = a[i]! + b[i]!;
  return y;
}

/** torch.nn.LayerNorm over the last dim: biased variance, eps inside the sqrt. */
export function refLayerNorm(
  x: ArrayLike<number>,
  rows: number,
  dim: number,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  eps: number,
): Float64Array {
  checkLength('refLayerNorm x', x.length, rows * dim);
  checkLength('refLayerNorm gamma', gamma.length, dim);
  checkLength('refLayerNorm beta', beta.length, dim);
  const y = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < dim; i++) mean += x[r * dim + i]!;
    mean /= dim;
    let variance = 0;
    for (let i = 0; i < dim; i++) {
      const d = x[r * dim + i]! - mean;
      variance += d * d;
    }
    variance /= dim;
    const invStd = 1 / Math.sqrt(variance + eps);
    for (let i = 0; i < dim; i++) {
      y[r * dim + i] = (x[r * dim + i]! - mean) * invStd * gamma[i]! + beta[i]!;
    }
  }
  return y;
}

/** Row-wise softmax with the row max subtracted first. */
export function refSoftmaxRows(x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  checkLength('refSoftmaxRows x', x.length, rows * cols);
  const y = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let max = -Infinity;
    for (let c = 0; c < cols; c++) max = Math.max(max, x[r * cols + c]!);
    let sum = 0;
    for (let c = 0; c < cols; c++) {
      const e = Math.exp(x[r * cols + c]! - max);
      y[r * cols + c] = e;
      sum += e;
    }
    for (let c = 0; c < cols; c++) y[r * cols + c] = y[r * cols + c]! / sum;
  }
  return y;
}

/**
 * BERT embedding sum before LayerNorm: word[id] + position[t] + tokenType[type],
 * with positions 0..len-1 restarting in every sequence. Returns the sequences
 * packed end to end, [sum of lengths, hidden]. Tables are flat row-major
 * [rows, hidden]; tokenTypeIds null means type 0 everywhere.
 */
export function refEmbedding(
  inputIds: number[][],
  tokenTypeIds: number[][] | null,
  word: ArrayLike<number>,
  pos: ArrayLike<number>,
  type: ArrayLike<number>,
  hidden: number,
): Float64Array {
  const vocabSize = word.length / hidden;
  const maxPositions = pos.length / hidden;
  const typeVocabSize = type.length / hidden;
  if (!Number.isInteger(vocabSize) || !Number.isInteger(maxPositions) || !Number.isInteger(typeVocabSize)) {
    throw new Error('refEmbedding: table lengths are not multiples of hidden');
  }
  if (tokenTypeIds !== null && tokenTypeIds.length !== inputIds.length) {
    throw new Error('refEmbedding: tokenTypeIds has a different number of sequences than inputIds');
  }
  const totalTokens = inputIds.reduce((n, seq) => n + seq.length, 0);
  const y = new Float64Array(totalTokens * hidden);
  let row = 0;
  inputIds.forEach((seq, s) => {
    const types = tokenTypeIds === null ? null : tokenTypeIds[s];
    if (types !== null && (types === undefined || types.length !== seq.length)) {
      throw new Error(`refEmbedding: tokenTypeIds[${s}] length differs from inputIds[${s}]`);
    }
    if (seq.length > maxPositions) {
      throw new Error(`refEmbedding: sequence ${s} has ${seq.length} tokens, more than ${maxPositions} positions`);
    }
    seq.forEach((id, t) => {
      const typeId = types === null ? 0 : types[t]!;
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`refEmbedding: token id ${id} out of range`);
      if (!Number.isInteger(typeId) || typeId < 0 || typeId >= typeVocabSize) {
        throw new Error(`refEmbedding: token type ${typeId} out of range`);
      }
      for (let h = 0; h < hidden; h++) {
        y[row * hidden + h] = word[id * hidden + h]! + pos[t * hidden + h]! + type[typeId * hidden + h]!;
      }
      row++;
    });
  });
  return y;
}

/**
 * Multi-head scaled dot-product attention over sequences packed end to end.
 * q, k, v are [T, numHeads·headDim] with head h in columns h·headDim..(h+1)·headDim
 * (HF's view(T, heads, headDim)); sequence s occupies rows offset_s..offset_s+len_s
 * where offsets are prefix sums of seqLengths. Each query attends only to keys of
 * its own sequence, with scores scaled by 1/√headDim. Returns context [T, hidden]
 * with heads concatenated in the same column layout.
 */
export function refAttentionPacked(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  seqLengths: number[],
  numHeads: number,
  headDim: number,
): Float64Array {
  const hidden = numHeads * headDim;
  const totalTokens = seqLengths.reduce((n, len) => n + len, 0);
  checkLength('refAttentionPacked q', q.length, totalTokens * hidden);
  checkLength('refAttentionPacked k', k.length, totalTokens * hidden);
  checkLength('refAttentionPacked v', v.length, totalTokens * hidden);
  const scale = 1 / Math.sqrt(headDim);
  const context = new Float64Array(totalTokens * hidden);
  let offset = 0;
  for (const len of seqLengths) {
    if (!Number.isInteger(len) || len < 0) throw new Error(`refAttentionPacked: bad sequence length ${len}`);
    for (let h = 0; h < numHeads; h++) {
      const col = h * headDim;
      for (let i = 0; i < len; i++) {
        const qRow = (offset + i) * hidden + col;
        const scores = new Float64Array(len);
        for (let j = 0; j < len; j++) {
          const kRow = (offset + j) * hidden + col;
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += q[qRow + d]! * k[kRow + d]!;
          scores[j] = dot * scale;
        }
        const probs = refSoftmaxRows(scores, 1, len);
        for (let d = 0; d < headDim; d++) {
          let sum = 0;
          for (let j = 0; j < len; j++) sum += probs[j]! * v[(offset + j) * hidden + col + d]!;
          context[qRow + d] = sum;
        }
      }
    }
    offset += len;
  }
  return context;
}

/**
 * Splits a fused projection [T, 3·hidden] whose rows are laid out q | k | v
 * (the concatenation of the three weight matrices along the output dim) into
 * separate q, k, v [T, hidden].
 */
export function refSplitFusedQkv(
  qkv: ArrayLike<number>,
  totalTokens: number,
  hidden: number,
): { q: Float64Array; k: Float64Array; v: Float64Array } {
  checkLength('refSplitFusedQkv qkv', qkv.length, totalTokens * 3 * hidden);
  const q = new Float64Array(totalTokens * hidden);
  const k = new Float64Array(totalTokens * hidden);
  const v = new Float64Array(totalTokens * hidden);
  for (let t = 0; t < totalTokens; t++) {
    for (let h = 0; h < hidden; h++) {
      q[t * hidden + h] = qkv[t * 3 * hidden + h]!;
      k[t * hidden + h] = qkv[t * 3 * hidden + hidden + h]!;
      v[t * hidden + h] = qkv[t * 3 * hidden + 2 * hidden + h]!;
    }
  }
  return { q, k, v };
}

/** GPT-2's "gelu_new": 0.5·v·(1 + tanh(√(2/π)·(v + 0.044715·v³))). */
export function refGeluTanh(v: number): number;
export function refGeluTanh(v: ArrayLike<number>): Float64Array;
export function refGeluTanh(v: number | ArrayLike<number>): number | Float64Array {
  const f = (x: number): number => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
  if (typeof v === 'number') return f(v);
  return Float64Array.from(v, f);
}

/** LlamaRMSNorm over the last dim: x / sqrt(mean(x²) + eps) · gamma, no mean subtracted, no bias. */
export function refRmsNorm(
  x: ArrayLike<number>,
  rows: number,
  dim: number,
  gamma: ArrayLike<number>,
  eps: number,
): Float64Array {
  checkLength('refRmsNorm x', x.length, rows * dim);
  checkLength('refRmsNorm gamma', gamma.length, dim);
  const y = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let squares = 0;
    for (let i = 0; i < dim; i++) squares += x[r * dim + i]! ** 2;
    const invRms = 1 / Math.sqrt(squares / dim + eps);
    for (let i = 0; i < dim; i++) y[r * dim + i] = x[r * dim + i]! * invRms * gamma[i]!;
  }
  return y;
}

/**
 * Hugging Face rotary embedding (apply_rotary_pos_emb with rotate_half) on one
 * tensor of heads: x is [rows, numHeads·headDim], row r at position positions[r].
 * Only the first rotaryDims dims of each head rotate, dim i with dim
 * i + rotaryDims/2, by angle position·invFreq[i]. The angle is rounded to f32
 * because HF computes freqs = inv_freq @ position_ids in float32: that rounding
 * is part of the model (an angle of 4000 rad moves by up to 2e-4), cos and sin
 * are then taken in f64.
 */
export function refRope(
  x: ArrayLike<number>,
  rows: number,
  numHeads: number,
  headDim: number,
  rotaryDims: number,
  positions: ArrayLike<number>,
  invFreq: ArrayLike<number>,
): Float64Array {
  checkLength('refRope x', x.length, rows * numHeads * headDim);
  checkLength('refRope positions', positions.length, rows);
  checkLength('refRope invFreq', invFreq.length, rotaryDims / 2);
  if (rotaryDims % 2 !== 0 || rotaryDims > headDim) throw new Error(`refRope: bad rotaryDims ${rotaryDims}`);
  const half = rotaryDims / 2;
  const y = Float64Array.from(x);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < numHeads; h++) {
      const at = (r * numHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(positions[r]! * invFreq[i]!);
        const x1 = x[at + i]!;
        const x2 = x[at + i + half]!;
        y[at + i] = x1 * Math.cos(angle) - x2 * Math.sin(angle);
        y[at + i + half] = x2 * Math.cos(angle) + x1 * Math.sin(angle);
      }
    }
  }
  return y;
}

/** SwiGLU: y = silu(gate) · up with x [rows, 2·width] holding gate | up, silu(g) = g / (1 + e^−g). */
export function refSiluMul(x: ArrayLike<number>, rows: number, width: number): Float64Array {
  checkLength('refSiluMul x', x.length, rows * 2 * width);
  const y = new Float64Array(rows * width);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < width; c++) {
      const g = x[r * 2 * width + c]!;
      const up = x[r * 2 * width + width + c]!;
      // For very negative g, e^−g = inf and g / inf = −0: no NaN to guard against in f64.
      y[r * width + c] = (g / (1 + Math.exp(-g))) * up;
    }
  }
  return y;
}

/** One query row of decoder attention: which sequence's history it reads and how many keys it sees. */
export interface RefQueryRow {
  seq: number;
  visible: number;
}

/**
 * Decoder (causal, cached) multi-head attention with dense histories: keys[s]
 * and values[s] are sequence s's [length_s, numKvHeads·headDim] rows in order,
 * q is [rows, numHeads·headDim]. Query row r attends to keys 0..visible_r − 1 of
 * its sequence. Query head h uses kv head floor(h / (numHeads / numKvHeads))
 * (grouped-query attention, HF repeat_kv). With ALiBi, score_j gains slope_h·j,
 * as HF BLOOM builds its bias. Returns [rows, numHeads·headDim].
 */
export function refAttentionCached(
  q: ArrayLike<number>,
  queryRows: readonly RefQueryRow[],
  keys: readonly ArrayLike<number>[],
  values: readonly ArrayLike<number>[],
  numHeads: number,
  numKvHeads: number,
  headDim: number,
  scale: number,
  alibiSlopes: ArrayLike<number> | null,
): Float64Array {
  const width = numHeads * headDim;
  const kvWidth = numKvHeads * headDim;
  checkLength('refAttentionCached q', q.length, queryRows.length * width);
  if (keys.length !== values.length) throw new Error('refAttentionCached: keys and values differ in sequence count');
  if (numHeads % numKvHeads !== 0) throw new Error('refAttentionCached: numHeads not a multiple of numKvHeads');
  if (alibiSlopes !== null) checkLength('refAttentionCached alibiSlopes', alibiSlopes.length, numHeads);
  const group = numHeads / numKvHeads;
  const out = new Float64Array(queryRows.length * width);
  queryRows.forEach(({ seq, visible }, r) => {
    const k = keys[seq];
    const v = values[seq];
    if (k === undefined || v === undefined) throw new Error(`refAttentionCached: no sequence ${seq}`);
    if (k.length !== v.length || k.length % kvWidth !== 0) throw new Error(`refAttentionCached: sequence ${seq} mis-sized`);
    if (visible < 1 || visible * kvWidth > k.length) throw new Error(`refAttentionCached: row ${r} sees ${visible} keys`);
    for (let h = 0; h < numHeads; h++) {
      const kvCol = Math.floor(h / group) * headDim;
      const scores = new Float64Array(visible);
      for (let j = 0; j < visible; j++) {
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[r * width + h * headDim + d]! * k[j * kvWidth + kvCol + d]!;
        scores[j] = dot * scale + (alibiSlopes === null ? 0 : alibiSlopes[h]! * j);
      }
      const probs = refSoftmaxRows(scores, 1, visible);
      for (let d = 0; d < headDim; d++) {
        let sum = 0;
        for (let j = 0; j < visible; j++) sum += probs[j]! * v[j * kvWidth + kvCol + d]!;
        out[r * width + h * headDim + d] = sum;
      }
    }
  });
  return out;
}
