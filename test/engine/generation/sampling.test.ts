import { describe, expect, it } from 'vitest';
import {
  DEFAULT_SAMPLING,
  SequenceSampler,
  validateSamplingParams,
  type SamplingParams,
} from '../../../src/engine/generation/sampling.js';
import { InvalidInputError } from '../../../src/util/errors.js';
import { Rng } from '../../../src/util/random.js';

function params(overrides: Partial<SamplingParams>): SamplingParams {
  return { ...DEFAULT_SAMPLING, seed: 1, ...overrides };
}

function row(values: readonly number[]): Float32Array {
  return Float32Array.from(values);
}

/** Logits whose softmax is exactly `probs` (up to float32 rounding of the logs). */
function logitsFor(probs: readonly number[]): Float32Array {
  return Float32Array.from(probs, (p) => Math.log(p));
}

function randomLogits(rng: Rng, vocab: number, std = 3): Float32Array {
  return rng.fillNormal(new Float32Array(vocab), 0, std);
}

function logSoftmax(values: readonly number[]): number[] {
  const max = Math.max(...values);
  const logZ = max + Math.log(values.reduce((sum, v) => sum + Math.exp(v - max), 0));
  return values.map((v) => v - logZ);
}

function counts(sampler: SequenceSampler, logits: Float32Array, draws: number): Map<number, number> {
  const seen = new Map<number, number>();
  for (let i = 0; i < draws; i++) {
    const { token } = sampler.sample(logits);
    seen.set(token, (seen.get(token) ?? 0) + 1);
  }
  return seen;
}

/** Pearson's chi-square of observed counts against expected probabilities (over every id in `probs`). */
function chiSquare(seen: Map<number, number>, probs: Map<number, number>, draws: number): number {
  let stat = 0;
  for (const [id, p] of probs) {
    const expected = p * draws;
    stat += ((seen.get(id) ?? 0) - expected) ** 2 / expected;
  }
  return stat;
}

/** Renormalised probabilities of `kept` under `probs`. */
function renormalised(probs: readonly number[], kept: readonly number[]): Map<number, number> {
  const mass = kept.reduce((sum, id) => sum + probs[id]!, 0);
  return new Map(kept.map((id) => [id, probs[id]! / mass]));
}

/**
 * The documented semantics written plainly, in float64, with full sorts: the
 * token a step must pick given the uniform u it draws. Penalties are not
 * modelled (the callers use none).
 */
function oracleToken(logits: Float32Array, p: SamplingParams, u: number): number {
  const scaled = Array.from(logits, (l) => l / p.temperature);
  const order = scaled.map((_, id) => id).sort((a, b) => scaled[b]! - scaled[a]! || a - b);
  const max = scaled[order[0]!]!;
  let kept = order;
  if (p.topK > 0) kept = kept.slice(0, p.topK);
  const weight = (id: number): number => Math.exp(scaled[id]! - max);
  if (p.topP < 1) {
    const total = kept.reduce((sum, id) => sum + weight(id), 0);
    let cum = 0;
    const cut = kept.findIndex((id) => (cum += weight(id)) >= p.topP * total);
    kept = kept.slice(0, cut + 1);
  }
  if (p.minP > 0) kept = kept.filter((id) => weight(id) >= p.minP);
  const total = kept.reduce((sum, id) => sum + weight(id), 0);
  let cum = 0;
  for (const id of kept) {
    cum += weight(id);
    if (cum > u * total) return id;
  }
  return kept[kept.length - 1]!;
}

describe('greedy sampling', () => {
  it('picks the argmax, the lowest id on ties', () => {
    const sampler = new SequenceSampler(params({ temperature: 0 }), []);
    expect(sampler.sample(row([1, 3, -2, 3, 2])).token).toBe(1);
    expect(sampler.sample(row([-Infinity, -5, -5, -7])).token).toBe(1);
  });

  it('ignores top-k, top-p and min-p and needs no seed', () => {
    const logits = randomLogits(new Rng(3), 1000);
    const expected = logits.indexOf(Math.max(...logits));
    const greedy = new SequenceSampler(params({ temperature: 0, topK: 5, topP: 0.1, minP: 0.9, seed: null }), []);
    for (let i = 0; i < 5; i++) expect(greedy.sample(logits).token).toBe(expected);
  });

  it('treats a temperature below 1e-5 as greedy', () => {
    const sampler = new SequenceSampler(params({ temperature: 1e-6 }), []);
    const probs = [0.3, 0.4, 0.3];
    for (let i = 0; i < 50; i++) expect(sampler.sample(logitsFor(probs)).token).toBe(1);
  });

  it('gives top-k = 1 the same tokens as greedy', () => {
    const rng = new Rng(11);
    const topOne = new SequenceSampler(params({ topK: 1, temperature: 1.5 }), []);
    const greedy = new SequenceSampler(params({ temperature: 0 }), []);
    for (let step = 0; step < 50; step++) {
      const logits = randomLogits(rng, 300);
      expect(topOne.sample(logits).token).toBe(greedy.sample(logits).token);
    }
  });
});

describe('random sampling', () => {
  const DRAWS = 20_000;
  // chi-square critical values at p = 0.001; the seed is fixed, so a pass is not luck that can run out.
  const CHI2_CRITICAL = { 1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47 } as const;

  it('draws from softmax(logits / temperature)', () => {
    const logits = [0, 1, 2, 0.5, -1];
    for (const temperature of [0.5, 1, 1.7]) {
      const sampler = new SequenceSampler(params({ temperature, seed: 5 }), []);
      const seen = counts(sampler, row(logits), DRAWS);
      const probs = logSoftmax(logits.map((l) => l / temperature)).map(Math.exp);
      expect(chiSquare(seen, new Map(probs.map((p, id) => [id, p])), DRAWS)).toBeLessThan(CHI2_CRITICAL[4]);
    }
  });

  it('top-p keeps exactly the smallest nucleus that reaches top_p, including ties broken by lower id', () => {
    // 996 equal tail tokens share 0.05; the big ones sit at scattered ids.
    const vocab = 1000;
    const big = new Map([
      [503, 0.4],
      [17, 0.3],
      [999, 0.15],
      [2, 0.1],
    ]);
    const tail = 0.05 / (vocab - big.size);
    const probs = Array.from({ length: vocab }, (_, id) => big.get(id) ?? tail);
    const logits = logitsFor(probs);

    // 0.4 < 0.65 <= 0.7: the nucleus is the top two, in the ratio 4 : 3.
    const twoSeen = counts(new SequenceSampler(params({ topP: 0.65 }), []), logits, DRAWS);
    expect([...twoSeen.keys()].sort((a, b) => a - b)).toEqual([17, 503]);
    expect(chiSquare(twoSeen, renormalised(probs, [503, 17]), DRAWS)).toBeLessThan(CHI2_CRITICAL[1]);

    // 0.95 + 199 tails < 0.96 <= 0.95 + 200 tails: the nucleus takes the 200 lowest tail ids.
    const tailIds = probs.map((_, id) => id).filter((id) => !big.has(id));
    const nucleus = new Set([...big.keys(), ...tailIds.slice(0, 200)]);
    const wideSeen = counts(new SequenceSampler(params({ topP: 0.96 }), []), logits, 5000);
    for (const id of wideSeen.keys()) expect(nucleus.has(id)).toBe(true);
    expect(wideSeen.has(tailIds[0]!)).toBe(true);
    expect(wideSeen.size).toBeGreaterThan(20);
  });

  it('top-p always keeps at least the most likely token', () => {
    const sampler = new SequenceSampler(params({ topP: 0.01 }), []);
    expect([...counts(sampler, logitsFor([0.2, 0.5, 0.3]), 200).keys()]).toEqual([1]);
  });

  it('top-p measures the nucleus within the top-k tokens, renormalised', () => {
    // Globally 0.4 < 0.5 would need two tokens; within the top 2, 0.4 / 0.7 >= 0.5 needs one.
    const seen = counts(new SequenceSampler(params({ topK: 2, topP: 0.5 }), []), logitsFor([0.4, 0.3, 0.2, 0.1]), 2000);
    expect([...seen.keys()]).toEqual([0]);
  });

  it('min-p keeps the tokens with p >= min_p * p_max and renormalises them', () => {
    const probs = [0.05, 0.5, 0.2, 0.12, 0.13];
    // threshold 0.3 * 0.5 = 0.15: tokens 1 and 2 survive.
    const seen = counts(new SequenceSampler(params({ minP: 0.3 }), []), logitsFor(probs), DRAWS);
    expect(chiSquare(seen, renormalised(probs, [1, 2]), DRAWS)).toBeLessThan(CHI2_CRITICAL[1]);
    // threshold 0.2 * 0.5 = 0.1, after top-k = 3 took 0.5, 0.2, 0.13.
    const withTopK = counts(new SequenceSampler(params({ minP: 0.2, topK: 3 }), []), logitsFor(probs), DRAWS);
    expect(chiSquare(withTopK, renormalised(probs, [1, 2, 4]), DRAWS)).toBeLessThan(CHI2_CRITICAL[2]);
  });

  it('min-p is measured after temperature', () => {
    // At T = 2 the ratio 0.2 / 0.5 becomes sqrt(0.4) ~ 0.63: min-p 0.5 keeps both.
    const probs = [0.5, 0.2, 0.3];
    const seen = counts(new SequenceSampler(params({ minP: 0.5, temperature: 2 }), []), logitsFor(probs), 2000);
    expect([...seen.keys()].sort()).toEqual([0, 1, 2]);
    const cold = counts(new SequenceSampler(params({ minP: 0.5, temperature: 0.5 }), []), logitsFor(probs), 2000);
    expect([...cold.keys()]).toEqual([0]);
  });

  it('picks the token the float64 oracle picks for the same uniform, over many configurations', () => {
    const rng = new Rng(2024);
    const configs: Partial<SamplingParams>[] = [
      {},
      { temperature: 0.7 },
      { topK: 40 },
      { topK: 40, topP: 0.9, temperature: 0.8 },
      { topP: 0.9 },
      { topP: 0.5, temperature: 1.3 },
      { minP: 0.05 },
      { minP: 0.1, topP: 0.95, temperature: 0.6 },
      { topK: 5000, minP: 0.02 },
    ];
    for (const [c, config] of configs.entries()) {
      const p = params({ ...config, seed: 100 + c });
      const sampler = new SequenceSampler(p, []);
      const uniforms = new Rng(p.seed!);
      for (let step = 0; step < 40; step++) {
        const logits = randomLogits(rng, 4000, 1 + (step % 4));
        expect(sampler.sample(logits).token, `config ${c} step ${step}`).toBe(oracleToken(logits, p, uniforms.next()));
      }
    }
  });

  it('agrees with the oracle on a 150k vocabulary, with and without truncation', () => {
    const rng = new Rng(8);
    for (const config of [{}, { topP: 0.9 }, { topK: 50 }]) {
      const p = params({ ...config, seed: 9 });
      const sampler = new SequenceSampler(p, []);
      const uniforms = new Rng(9);
      for (let step = 0; step < 3; step++) {
        const logits = randomLogits(rng, 150_000, 2);
        expect(sampler.sample(logits).token).toBe(oracleToken(logits, p, uniforms.next()));
      }
    }
  });
});

describe('penalties', () => {
  // logprobs report log_softmax of the penalised logits, so with a vocabulary
  // of at most 20 the `top` list shows every penalised logit.
  function reported(sampled: { top: { token: number; logprob: number }[] }): number[] {
    return [...sampled.top].sort((a, b) => a.token - b.token).map((t) => t.logprob);
  }

  it('repetition divides positive and multiplies negative logits of prompt and generated tokens', () => {
    const logits = [2, -1, 0.5, 1, 0, 3];
    const sampler = new SequenceSampler(params({ temperature: 0, repetitionPenalty: 2, logprobs: 6 }), [0, 1, 1]);
    const first = sampler.sample(row(logits));
    expect(first.token).toBe(5);
    expect(reported(first)).toEqual(logSoftmax([1, -2, 0.5, 1, 0, 3]).map((v) => expect.closeTo(v, 12)));
    // Token 5 is now generated: 3 / 2, once, however often it repeats.
    const second = sampler.sample(row(logits));
    expect(reported(second)).toEqual(logSoftmax([1, -2, 0.5, 1, 0, 1.5]).map((v) => expect.closeTo(v, 12)));
    sampler.sample(row(logits));
    expect(reported(sampler.sample(row(logits)))).toEqual(reported(second));
  });

  it('presence and frequency count generated tokens only, not the prompt', () => {
    const logits = [0, 1, 2, 5];
    const sampler = new SequenceSampler(
      params({ temperature: 0, presencePenalty: 0.5, frequencyPenalty: 0.25, logprobs: 4 }),
      [0, 1, 2, 2, 2],
    );
    expect(reported(sampler.sample(row(logits)))).toEqual(logSoftmax(logits).map((v) => expect.closeTo(v, 12)));
    expect(reported(sampler.sample(row(logits)))).toEqual(
      logSoftmax([0, 1, 2, 5 - 0.5 - 0.25]).map((v) => expect.closeTo(v, 12)),
    );
    expect(reported(sampler.sample(row(logits)))).toEqual(
      logSoftmax([0, 1, 2, 5 - 0.5 - 0.5]).map((v) => expect.closeTo(v, 12)),
    );
    expect(sampler.generated).toEqual([3, 3, 3]);
  });

  it('applies repetition before frequency and presence', () => {
    const sampler = new SequenceSampler(
      params({ temperature: 0, repetitionPenalty: 2, frequencyPenalty: 1, logprobs: 2 }),
      [],
    );
    sampler.sample(row([4, 0]));
    // (4 / 2) - 1 = 1, not (4 - 1) / 2 = 1.5.
    expect(reported(sampler.sample(row([4, 0])))).toEqual(logSoftmax([1, 0]).map((v) => expect.closeTo(v, 12)));
  });

  it('a negative presence penalty makes repeats more likely', () => {
    const sampler = new SequenceSampler(params({ temperature: 0, presencePenalty: -2 }), []);
    expect(sampler.sample(row([1, 1.5])).token).toBe(1);
    expect(sampler.sample(row([2, 0.5])).token).toBe(1);
  });
});

describe('seeded streams', () => {
  const truncating = { temperature: 0.9, topK: 50, topP: 0.95 };

  function logitStream(seed: number, steps: number, vocab: number): Float32Array[] {
    const rng = new Rng(seed);
    return Array.from({ length: steps }, () => randomLogits(rng, vocab));
  }

  it('gives identical tokens for the same seed and logits, and different ones for another seed', () => {
    const logits = logitStream(1, 100, 500);
    const run = (seed: number): number[] => {
      const sampler = new SequenceSampler(params({ ...truncating, seed }), [1, 2, 3]);
      return logits.map((l) => sampler.sample(l).token);
    };
    expect(run(42)).toEqual(run(42));
    expect(run(43)).not.toEqual(run(42));
  });

  it('a sequence draws the same tokens alone or interleaved with batch-mates, from views into one batch buffer', () => {
    const steps = 60;
    const vocab = 256;
    const streams = [logitStream(10, steps, vocab), logitStream(11, steps, vocab), logitStream(12, steps, vocab)];
    const settings = [
      params({ ...truncating, seed: 1 }),
      params({ temperature: 0, seed: 2 }),
      params({ minP: 0.1, seed: 3, frequencyPenalty: 0.5 }),
    ];
    const alone = settings.map((p, s) => {
      const sampler = new SequenceSampler(p, []);
      return streams[s]!.map((l) => sampler.sample(l).token);
    });

    const batch = settings.map((p) => new SequenceSampler(p, []));
    const together: number[][] = [[], [], []];
    const batchLogits = new Float32Array(3 * vocab);
    for (let step = 0; step < steps; step++) {
      for (let s = 0; s < 3; s++) batchLogits.set(streams[s]![step]!, s * vocab);
      // Sampling order changes between steps, as it would when a batch is re-planned.
      const order = step % 2 === 0 ? [0, 1, 2] : [2, 0, 1];
      for (const s of order) {
        together[s]!.push(batch[s]!.sample(batchLogits.subarray(s * vocab, (s + 1) * vocab)).token);
      }
    }
    expect(together).toEqual(alone);
    expect(batch.map((b) => b.generated)).toEqual(alone);
  });

  it('a null seed draws a seed per sequence and reports it', () => {
    const a = new SequenceSampler(params({ seed: null }), []);
    const b = new SequenceSampler(params({ seed: null }), []);
    expect(Number.isSafeInteger(a.seed)).toBe(true);
    expect(a.seed).not.toBe(b.seed);
    const logits = logitStream(3, 20, 100);
    const replay = new SequenceSampler(params({ seed: a.seed }), []);
    expect(logits.map((l) => a.sample(l).token)).toEqual(logits.map((l) => replay.sample(l).token));
  });
});

describe('logprobs', () => {
  it('reports the top n sorted, the chosen token consistently, and no more mass than 1', () => {
    const rng = new Rng(4);
    const sampler = new SequenceSampler(params({ temperature: 0.8, topP: 0.9, logprobs: 5, repetitionPenalty: 1.3 }), [7]);
    for (let step = 0; step < 30; step++) {
      const logits = randomLogits(rng, 64);
      const sampled = sampler.sample(logits);
      expect(sampled.top).toHaveLength(5);
      for (let j = 1; j < 5; j++) expect(sampled.top[j - 1]!.logprob).toBeGreaterThanOrEqual(sampled.top[j]!.logprob);
      expect(sampled.top.reduce((sum, t) => sum + Math.exp(t.logprob), 0)).toBeLessThanOrEqual(1 + 1e-12);
      expect(sampled.logprob).toBeLessThanOrEqual(0);
      const listed = sampled.top.find((t) => t.token === sampled.token);
      if (listed) expect(listed.logprob).toBe(sampled.logprob);
      else expect(sampled.logprob).toBeLessThanOrEqual(sampled.top[4]!.logprob);
    }
  });

  it('are log_softmax of the logits before temperature, whatever the temperature', () => {
    const logits = [0.25, 2, -1, 1];
    const expected = logSoftmax(logits);
    for (const temperature of [0, 0.3, 1, 2]) {
      const sampled = new SequenceSampler(params({ temperature, logprobs: 2 }), []).sample(row(logits));
      expect(sampled.logprob).toBeCloseTo(expected[sampled.token]!, 12);
      expect(sampled.top.map((t) => t.token)).toEqual([1, 3]);
      expect(sampled.top[0]!.logprob).toBeCloseTo(expected[1]!, 12);
    }
  });

  it('lists no alternatives when logprobs = 0, and at most the vocabulary', () => {
    expect(new SequenceSampler(params({}), []).sample(row([1, 2])).top).toEqual([]);
    expect(new SequenceSampler(params({ logprobs: 20 }), []).sample(row([1, 2, 2])).top.map((t) => t.token)).toEqual([
      1, 2, 0,
    ]);
  });

  it('does not modify the logits row', () => {
    const logits = row([1, 2, 3, 4]);
    new SequenceSampler(params({ repetitionPenalty: 3, presencePenalty: 1, temperature: 0.5, topK: 2 }), [3]).sample(logits);
    expect(Array.from(logits)).toEqual([1, 2, 3, 4]);
  });

  it('refuses rows with NaN or +Infinity, or nothing finite', () => {
    const sampler = new SequenceSampler(params({}), []);
    expect(() => sampler.sample(row([0, NaN]))).toThrow(/logits\[1\]/);
    expect(() => sampler.sample(row([Infinity, 0]))).toThrow(/logits\[0\]/);
    expect(() => sampler.sample(row([-Infinity, -Infinity]))).toThrow(/-Infinity/);
    // Masked tokens are fine.
    expect(sampler.sample(row([-Infinity, 0, -Infinity])).token).toBe(1);
  });
});

describe('validateSamplingParams', () => {
  it('fills defaults and keeps what is valid', () => {
    expect(validateSamplingParams({})).toEqual(DEFAULT_SAMPLING);
    const edges = { temperature: 2, topK: -1, topP: 1, minP: 1, presencePenalty: -2, frequencyPenalty: 2 };
    expect(validateSamplingParams({ ...edges, repetitionPenalty: 10, seed: -5, logprobs: 20 })).toEqual({
      ...edges,
      repetitionPenalty: 10,
      seed: -5,
      logprobs: 20,
    });
    expect(validateSamplingParams({ temperature: 0, seed: null }).temperature).toBe(0);
  });

  const bad: [keyof SamplingParams, unknown][] = [
    ['temperature', 2.5],
    ['temperature', -0.1],
    ['temperature', NaN],
    ['topK', 1.5],
    ['topK', -2],
    ['topP', 0],
    ['topP', 1.01],
    ['minP', -0.1],
    ['minP', 1.5],
    ['presencePenalty', 2.1],
    ['frequencyPenalty', -3],
    ['repetitionPenalty', 0],
    ['repetitionPenalty', 11],
    ['logprobs', 21],
    ['logprobs', 1.5],
    ['logprobs', '3'],
    ['seed', 1.5],
    ['seed', 2 ** 60],
    ['seed', '7'],
  ];
  it.each(bad)('rejects %s = %s, naming the field', (field, value) => {
    const attempt = (): SamplingParams => validateSamplingParams({ [field]: value } as Partial<SamplingParams>);
    expect(attempt).toThrow(InvalidInputError);
    expect(attempt).toThrow(new RegExp(`^${field} `));
  });
});
