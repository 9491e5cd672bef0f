/**
 * Host-side token sampling for generation: one SequenceSampler per sequence,
 * fed that sequence's logits row once per step. Float64 throughout.
 *
 * The order is vLLM's sampler (with min-p after top-k/top-p, as in its v0):
 *   1. penalties on the raw logits: repetition over prompt and generated
 *      tokens (HF/vLLM: logit > 0 ? logit / r : logit * r), then frequency and
 *      presence over generated tokens only (OpenAI: count * f + (count > 0) * p);
 *   2. logprobs are log_softmax of these penalised logits (see sample());
 *   3. temperature; below GREEDY_TEMPERATURE the step is a plain argmax;
 *   4. top-k, then top-p over the top-k renormalised, then min-p;
 *   5. one uniform draw, inverted through the CDF of the kept tokens taken in
 *      descending-probability order, ties to the lower id.
 */

import { getRandomValues } from 'node:crypto';
import { InvalidInputError } from '../../util/errors.js';
import { Rng } from '../../util/random.js';

export interface SamplingParams {
  /** 0 = greedy (argmax, lowest id on ties). */
  temperature: number;
  /** 0 or < 0 = off. */
  topK: number;
  /** 1 = off; keeps the smallest set of most likely tokens whose mass reaches topP. */
  topP: number;
  /** 0 = off; keeps tokens with p >= minP * p_max. */
  minP: number;
  /** logit -= presencePenalty when the token was generated before. */
  presencePenalty: number;
  /** logit -= frequencyPenalty * (times generated); prompt tokens do not count. */
  frequencyPenalty: number;
  /** 1 = off; over prompt and generated tokens: logit > 0 ? logit / r : logit * r. */
  repetitionPenalty: number;
  /** null = a random seed drawn once per sequence. */
  seed: number | null;
  /** How many top alternatives to report per token (0 = none; the chosen token's logprob is always reported). */
  logprobs: number;
}

export const DEFAULT_SAMPLING: Readonly<SamplingParams> = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
  seed: null,
  logprobs: 0,
});

export const MAX_LOGPROBS = 20;

/**
 * Below this temperature a step is greedy, as vLLM's _SAMPLING_EPS: dividing
 * by a near-zero temperature would only approximate the argmax, and the step
 * then draws nothing from the PRNG and ignores top-k/top-p/min-p.
 */
export const GREEDY_TEMPERATURE = 1e-5;

interface FieldRange {
  min: number;
  max: number;
  /** The minimum itself is not allowed: (min, max]. */
  minExclusive?: boolean;
  integer?: boolean;
}

// OpenAI's ranges where OpenAI has the parameter; vLLM's otherwise.
const FIELD_RANGES: Record<Exclude<keyof SamplingParams, 'seed'>, FieldRange> = {
  temperature: { min: 0, max: 2 },
  topK: { min: -1, max: Number.MAX_SAFE_INTEGER, integer: true },
  topP: { min: 0, max: 1, minExclusive: true },
  minP: { min: 0, max: 1 },
  presencePenalty: { min: -2, max: 2 },
  frequencyPenalty: { min: -2, max: 2 },
  repetitionPenalty: { min: 0, max: 10, minExclusive: true },
  logprobs: { min: 0, max: MAX_LOGPROBS, integer: true },
};

/** Fills missing fields from DEFAULT_SAMPLING; throws InvalidInputError naming the first bad field. */
export function validateSamplingParams(p: Partial<SamplingParams>): SamplingParams {
  const params: SamplingParams = { ...DEFAULT_SAMPLING };
  for (const [field, range] of Object.entries(FIELD_RANGES) as [keyof typeof FIELD_RANGES, FieldRange][]) {
    const value: unknown = p[field];
    if (value === undefined) continue;
    if (!inRange(value, range)) throw new SamplingParamError(field, describeRange(range), show(value));
    params[field] = value;
  }
  if (p.seed !== undefined) {
    const seed: unknown = p.seed;
    if (seed !== null && !(typeof seed === 'number' && Number.isSafeInteger(seed))) {
      throw new SamplingParamError('seed', 'a safe integer or null', show(seed));
    }
    params.seed = seed;
  }
  return params;
}

/**
 * A sampling field out of its range. `field` and `requirement` let a protocol
 * layer name the field its own way and leave the value out of what it answers.
 */
export class SamplingParamError extends InvalidInputError {
  constructor(
    readonly field: keyof SamplingParams,
    readonly requirement: string,
    shown: string,
  ) {
    super(`${field} must be ${requirement}, got ${shown}`);
  }
}

function inRange(value: unknown, range: FieldRange): value is number {
  if (typeof value !== 'number' || Number.isNaN(value)) return false;
  if (range.integer && !Number.isInteger(value)) return false;
  const aboveMin = range.minExclusive ? value > range.min : value >= range.min;
  return aboveMin && value <= range.max;
}

function describeRange(range: FieldRange): string {
  if (range.max === Number.MAX_SAFE_INTEGER) return `an integer >= ${range.min}`;
  const interval = `${range.minExclusive ? '(' : '['}${range.min}, ${range.max}]`;
  return `${range.integer ? 'an integer' : 'a number'} in ${interval}`;
}

function show(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

export interface SampledToken {
  token: number;
  logprob: number;
  /** The `logprobs` most likely tokens, most likely first (ties: lower id). */
  top: { token: number; logprob: number }[];
}

/**
 * One sequence's sampler. It owns its PRNG stream: the tokens it draws depend
 * only on its seed and its own logits, never on batch-mates or on how many
 * other sequences sampled before it. A non-greedy step takes exactly one
 * uniform from the stream and a greedy one takes none.
 *
 * Preemption needs nothing: keep the sampler with the sequence and the PRNG
 * state and generated counts carry on where they were (nothing is replayed).
 */
export class SequenceSampler {
  /** The seed the stream started from (drawn when params.seed is null), for logs and replay. */
  readonly seed: number;
  private readonly params: Readonly<SamplingParams>;
  private readonly rng: Rng;
  private readonly promptTokens: ReadonlySet<number>;
  private readonly generatedIds: number[] = [];
  private readonly generatedCounts = new Map<number, number>();

  /** `params` as returned by validateSamplingParams. */
  constructor(params: SamplingParams, promptIds: readonly number[]) {
    this.params = { ...params };
    this.seed = params.seed ?? drawSeed();
    this.rng = new Rng(this.seed);
    this.promptTokens = new Set(promptIds);
  }

  get generated(): readonly number[] {
    return this.generatedIds;
  }

  /**
   * logits: this sequence's row (length = vocab), possibly a subarray view;
   * it is not modified. Records the sampled token as generated.
   *
   * The logprobs are log_softmax of the penalised logits, before temperature
   * and truncation: what the model (with the request's repetition controls)
   * thinks of each token, the same for a greedy and a sampled request. They
   * are not the probabilities of the truncated distribution drawn from.
   */
  sample(logits: Float32Array): SampledToken {
    const vocab = logits.length;
    const rows = scratchRows(vocab);
    const penalised = rows.penalised;
    copyFinite(logits, penalised);
    this.applyPenalties(penalised, vocab);
    const { max, logZ } = logSumExp(penalised, vocab, rows.weights);

    const token = this.params.temperature < GREEDY_TEMPERATURE ? argmax(penalised, vocab) : this.draw(rows, vocab, max);

    this.generatedIds.push(token);
    this.generatedCounts.set(token, (this.generatedCounts.get(token) ?? 0) + 1);
    const top =
      this.params.logprobs > 0
        ? Array.from(topIndices(penalised, vocab, Math.min(this.params.logprobs, vocab)), (id) => ({
            token: id,
            logprob: penalised[id]! - logZ,
          }))
        : [];
    return { token, logprob: penalised[token]! - logZ, top };
  }

  private applyPenalties(row: Float64Array, vocab: number): void {
    const { repetitionPenalty, frequencyPenalty, presencePenalty } = this.params;
    if (repetitionPenalty !== 1) {
      for (const id of this.promptTokens) penaliseRepetition(row, vocab, id, repetitionPenalty);
      for (const id of this.generatedCounts.keys()) {
        if (!this.promptTokens.has(id)) penaliseRepetition(row, vocab, id, repetitionPenalty);
      }
    }
    if (frequencyPenalty !== 0 || presencePenalty !== 0) {
      for (const [id, count] of this.generatedCounts) {
        if (id < vocab) row[id] = row[id]! - frequencyPenalty * count - presencePenalty;
      }
    }
  }

  /** The temperature/top-k/top-p/min-p path; `penalisedMax` is the max of rows.penalised, rows.weights = exp(penalised - max). */
  private draw(rows: ScratchRows, vocab: number, penalisedMax: number): number {
    const { temperature, topK, topP, minP } = this.params;
    let scaled = rows.penalised;
    let scaledMax = penalisedMax;
    const weights = rows.weights;
    if (temperature !== 1) {
      // Dividing is monotone, so max / T is exactly the scaled value of the
      // max token and its weight is exactly 1 (min-p relies on that).
      scaled = rows.scaled;
      scaledMax = penalisedMax / temperature;
      for (let i = 0; i < vocab; i++) {
        const s = rows.penalised[i]! / temperature;
        scaled[i] = s;
        weights[i] = Math.exp(s - scaledMax);
      }
    }
    const u = this.rng.next();
    const row: WeightedRow = { scaled, weights, vocab, max: scaledMax };

    if (topK > 0 && topK < vocab) {
      const kept = cutMinP(cutTopP(topIndices(scaled, vocab, topK), weights, topP), weights, minP);
      return drawFromRun(kept, weights, u);
    }
    if (topP < 1) return drawFromRun(cutMinP(nucleus(row, rows, topP), weights, minP), weights, u);
    // No truncation but min-p (the common case): the draw itself finds its
    // token without sorting the vocabulary.
    return drawDescending(row, rows, minP, u);
  }
}

function penaliseRepetition(row: Float64Array, vocab: number, id: number, penalty: number): void {
  if (id < 0 || id >= vocab) return;
  const logit = row[id]!;
  row[id] = logit > 0 ? logit / penalty : logit * penalty;
}

/** A random 53-bit seed for a request without one; the sampler reports it so the stream can be replayed. */
function drawSeed(): number {
  const [high, low] = getRandomValues(new Uint32Array(2));
  return (high! & 0x1fffff) * 2 ** 32 + low!;
}

/**
 * Working rows shared by every sampler. sample() is synchronous and never
 * re-entered, and one set of vocab-sized rows (~3.5 MB at 150k tokens) beats
 * one per live sequence.
 */
interface ScratchRows {
  penalised: Float64Array;
  scaled: Float64Array;
  weights: Float64Array;
  bucketOf: Uint8Array;
  ids: Int32Array;
}

let scratch: ScratchRows | null = null;

function scratchRows(vocab: number): ScratchRows {
  if (vocab === 0) throw new RangeError('sample() needs a non-empty logits row');
  if (scratch === null || scratch.penalised.length < vocab) {
    scratch = {
      penalised: new Float64Array(vocab),
      scaled: new Float64Array(vocab),
      weights: new Float64Array(vocab),
      bucketOf: new Uint8Array(vocab),
      ids: new Int32Array(vocab),
    };
  }
  return scratch;
}

/** -Infinity is a masked token; NaN or +Infinity mean the forward pass went wrong and no draw would be meaningful. */
function copyFinite(logits: Float32Array, out: Float64Array): void {
  for (let i = 0; i < logits.length; i++) {
    const logit = logits[i]!;
    if (!(logit < Infinity)) throw new RangeError(`logits[${i}] is ${logit}: the row cannot be sampled`);
    out[i] = logit;
  }
}

/** Writes exp(row - max) into `weights`. */
function logSumExp(row: Float64Array, vocab: number, weights: Float64Array): { max: number; logZ: number } {
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) if (row[i]! > max) max = row[i]!;
  if (max === -Infinity) throw new RangeError('every logit is -Infinity: the row cannot be sampled');
  let sum = 0;
  for (let i = 0; i < vocab; i++) {
    const w = Math.exp(row[i]! - max);
    weights[i] = w;
    sum += w;
  }
  return { max, logZ: max + Math.log(sum) };
}

/** Lowest id among the maxima: strict > while scanning upwards. */
function argmax(row: Float64Array, vocab: number): number {
  let best = 0;
  for (let i = 1; i < vocab; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** Sorts ids by value descending, ties to the lower id (NaN - NaN cannot occur; -Inf - -Inf is NaN and falls to the id). */
function byValueDesc(row: Float64Array): (a: number, b: number) => number {
  return (a, b) => row[b]! - row[a]! || a - b;
}

/**
 * The k highest ids of row[0..vocab) by value (ties: lower id), highest first.
 * A size-k min-heap, O(vocab log k), instead of sorting the row.
 */
function topIndices(row: Float64Array, vocab: number, k: number): Int32Array {
  const heap = new Int32Array(k);
  // The heap's root is its worst member: lowest value, highest id on ties.
  const worse = (a: number, b: number): boolean => row[a]! < row[b]! || (row[a] === row[b] && a > b);
  const siftDown = (from: number): void => {
    let at = from;
    for (;;) {
      const left = 2 * at + 1;
      if (left >= k) return;
      const right = left + 1;
      const child = right < k && worse(heap[right]!, heap[left]!) ? right : left;
      if (!worse(heap[child]!, heap[at]!)) return;
      const swap = heap[at]!;
      heap[at] = heap[child]!;
      heap[child] = swap;
      at = child;
    }
  };
  for (let i = 0; i < k; i++) heap[i] = i;
  for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(i);
  for (let i = k; i < vocab; i++) {
    if (worse(heap[0]!, i)) {
      heap[0] = i;
      siftDown(0);
    }
  }
  return heap.sort(byValueDesc(row));
}

/** A run sorted best first; top-p over the run's own (renormalised) mass. Keeps at least one token. */
function cutTopP(run: Int32Array, weights: Float64Array, topP: number): Int32Array {
  if (topP >= 1) return run;
  let total = 0;
  for (const id of run) total += weights[id]!;
  const needed = topP * total;
  let cum = 0;
  for (let j = 0; j < run.length; j++) {
    cum += weights[run[j]!]!;
    if (cum >= needed) return run.subarray(0, j + 1);
  }
  return run;
}

/** A run sorted best first, whose first weight is the max (1): min-p keeps a prefix. */
function cutMinP(run: Int32Array, weights: Float64Array, minP: number): Int32Array {
  if (minP <= 0) return run;
  let kept = 1;
  while (kept < run.length && weights[run[kept]!]! >= minP) kept++;
  return run.subarray(0, kept);
}

/** Inverse CDF over a run sorted best first: the first token whose cumulative weight exceeds u * total. */
function drawFromRun(run: Int32Array, weights: Float64Array, u: number): number {
  let total = 0;
  for (const id of run) total += weights[id]!;
  const target = u * total;
  let cum = 0;
  for (const id of run) {
    cum += weights[id]!;
    if (cum > target) return id;
  }
  return run[run.length - 1]!;
}

interface WeightedRow {
  scaled: Float64Array;
  /** exp(scaled - max): the max token weighs exactly 1. */
  weights: Float64Array;
  vocab: number;
  max: number;
}

// A bucket is a quarter-nat slice of "how far below the max"; the last one
// takes everything 63 nats or more below (weight < 5e-28) and masked tokens.
const BUCKETS_PER_NAT = 4;
const BUCKET_COUNT = 255;
const NOT_KEPT = 255;

/**
 * Files every token with weight >= minWeight into a bucket by how far its
 * scaled logit lies below the max, so that each bucket is a contiguous stretch
 * of the descending order. The bucket masses then say where a cumulative
 * target falls, and only the tokens up to (or only in) that bucket need
 * sorting: the vocabulary never does.
 */
function fileIntoBuckets(row: WeightedRow, bucketOf: Uint8Array, minWeight: number): { bucketMass: Float64Array; total: number } {
  const { scaled, weights, vocab, max } = row;
  const bucketMass = new Float64Array(BUCKET_COUNT);
  let total = 0;
  for (let i = 0; i < vocab; i++) {
    const w = weights[i]!;
    if (w < minWeight) {
      bucketOf[i] = NOT_KEPT;
      continue;
    }
    const below = (max - scaled[i]!) * BUCKETS_PER_NAT;
    const bucket = below < BUCKET_COUNT - 1 ? Math.floor(below) : BUCKET_COUNT - 1;
    bucketOf[i] = bucket;
    bucketMass[bucket] = bucketMass[bucket]! + w;
    total += w;
  }
  return { bucketMass, total };
}

/** The ids in buckets [first, last], sorted by scaled logit descending (ties: lower id). */
function sortedMembers(row: WeightedRow, rows: ScratchRows, first: number, last: number): Int32Array {
  let count = 0;
  for (let i = 0; i < row.vocab; i++) {
    const bucket = rows.bucketOf[i]!;
    if (bucket >= first && bucket <= last) rows.ids[count++] = i;
  }
  return rows.ids.subarray(0, count).sort(byValueDesc(row.scaled));
}

/**
 * Top-p without top-k: the smallest run of most likely tokens (ties: lower
 * id) whose cumulative weight is >= topP of the total, sorted best first.
 */
function nucleus(row: WeightedRow, rows: ScratchRows, topP: number): Int32Array {
  const { bucketMass, total } = fileIntoBuckets(row, rows.bucketOf, 0);
  const needed = topP * total;
  let lastBucket = BUCKET_COUNT - 1;
  let bucketCum = 0;
  for (let b = 0; b < BUCKET_COUNT; b++) {
    bucketCum += bucketMass[b]!;
    if (bucketCum >= needed) {
      lastBucket = b;
      break;
    }
  }
  const run = sortedMembers(row, rows, 0, lastBucket);
  let cum = 0;
  for (let j = 0; j < run.length; j++) {
    cum += row.weights[run[j]!]!;
    if (cum >= needed) return run.subarray(0, j + 1);
  }
  // Only when the bucket sums and the sorted sum round differently in the last bit.
  return run;
}

/**
 * Inverse CDF over every token with weight >= minWeight in descending order
 * (ties: lower id): the first whose cumulative weight exceeds u * total.
 * Only the bucket the target falls in is sorted; the ones before it count by
 * their mass.
 */
function drawDescending(row: WeightedRow, rows: ScratchRows, minWeight: number, u: number): number {
  const { bucketMass, total } = fileIntoBuckets(row, rows.bucketOf, minWeight);
  const target = u * total;
  let bucket = -1;
  let massBefore = 0;
  let lastNonEmpty = 0;
  let massBeforeLast = 0;
  for (let b = 0, cum = 0; b < BUCKET_COUNT; b++) {
    const mass = bucketMass[b]!;
    if (mass > 0) {
      lastNonEmpty = b;
      massBeforeLast = cum;
    }
    if (cum + mass > target) {
      bucket = b;
      massBefore = cum;
      break;
    }
    cum += mass;
  }
  if (bucket === -1) {
    // u * total rounded up past the summed masses: the last token with weight.
    bucket = lastNonEmpty;
    massBefore = massBeforeLast;
  }
  const members = sortedMembers(row, rows, bucket, bucket);
  let cum = massBefore;
  let lastWeighted = members[0]!;
  for (const id of members) {
    const w = row.weights[id]!;
    if (w > 0) lastWeighted = id;
    cum += w;
    if (cum > target) return id;
  }
  return lastWeighted;
}
