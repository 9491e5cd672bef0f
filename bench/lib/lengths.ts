import type { Rng } from '../../src/util/random.js';

export interface LengthSummary {
  count: number;
  min: number;
  median: number;
  mean: number;
  p90: number;
  max: number;
  total: number;
}

const clipLength = (x: number, maxLength: number): number => Math.min(maxLength, Math.max(1, Math.round(x)));

/**
 * Long-tailed sequence lengths: lognormal around `median` (ln L ~ N(ln median, sigma)),
 * clipped to 1..maxLength. Real request mixes look like this: many short
 * inputs and a few that reach the model's limit, which sets the padded length.
 */
export function lognormalLengths(rng: Rng, count: number, median: number, sigma: number, maxLength: number): number[] {
  return Array.from({ length: count }, () => clipLength(Math.exp(rng.normal(Math.log(median), sigma)), maxLength));
}

/** Lengths ~ N(mean, std), clipped to 1..maxLength: a mix where padding costs little. */
export function normalLengths(rng: Rng, count: number, mean: number, std: number, maxLength: number): number[] {
  return Array.from({ length: count }, () => clipLength(rng.normal(mean, std), maxLength));
}

/**
 * Key ranges of a padded batch: sequence b occupies rows [b·L, (b+1)·L) and
 * every one of its L rows (padding included) is a query whose keys are the
 * first len_b rows. This is the least work a padded implementation with an
 * attention mask does: padding queries are computed, padding keys masked.
 */
export function paddedKeyRanges(lengths: readonly number[], paddedLength: number): Uint32Array {
  const table = new Uint32Array(lengths.length * paddedLength * 2);
  lengths.forEach((len, b) => {
    if (len > paddedLength) throw new RangeError(`sequence ${b} has ${len} tokens, more than the padded length ${paddedLength}`);
    for (let i = 0; i < paddedLength; i++) {
      const t = b * paddedLength + i;
      table[2 * t] = b * paddedLength;
      table[2 * t + 1] = len;
    }
  });
  return table;
}

/** Split `items` into consecutive groups of at most `maxPerGroup` sequences. */
export function chunk<T>(items: readonly T[], maxPerGroup: number): T[][] {
  if (maxPerGroup < 1) throw new RangeError(`group size must be >= 1, got ${maxPerGroup}`);
  const groups: T[][] = [];
  for (let i = 0; i < items.length; i += maxPerGroup) groups.push(items.slice(i, i + maxPerGroup));
  return groups;
}

export function summarizeLengths(lengths: readonly number[]): LengthSummary {
  const sorted = [...lengths].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  const total = sorted.reduce((a, b) => a + b, 0);
  return {
    count: sorted.length,
    min: sorted[0] ?? 0,
    median: at(0.5),
    mean: sorted.length > 0 ? total / sorted.length : 0,
    p90: at(0.9),
    max: sorted[sorted.length - 1] ?? 0,
    total,
  };
}
