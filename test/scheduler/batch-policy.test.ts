import { describe, expect, it } from 'vitest';
import { batchFeatures, partitionByLength, pickSlo, type QueuedItem } from '../../src/scheduler/batch-policy.js';
import { fitNonNegative, LinearCostModel, type BatchFeatures, type CostEstimator } from '../../src/scheduler/cost-model.js';
import { Rng } from '../../src/util/random.js';

let seq = 0;
const item = (length: number, over: Partial<QueuedItem> = {}): QueuedItem => ({
  seq: seq++,
  task: 't0',
  kind: 'lora',
  length,
  arrivalMs: 0,
  dueMs: 1e9,
  offline: false,
  ...over,
});

/** A padded-style cost (rows × max length) makes grouping by length matter, as in PetS. */
const paddedCost: CostEstimator & { maxOf: (f: BatchFeatures) => number } = {
  maxOf: () => 0,
  estimateMs: (f) => 5 + 0.01 * f.rows * Math.sqrt(f.sumSqLen / f.rows) * 1.3,
};

/** Exhaustive minimum over all contiguous splits of the length-sorted order. */
function bruteForce(lengths: number[], cost: CostEstimator, maxRows: number, maxTokens: number): number {
  const sorted = [...lengths].sort((a, b) => a - b);
  const best = (from: number): number => {
    if (from === sorted.length) return 0;
    let m = Infinity;
    for (let to = from + 1; to <= sorted.length && to - from <= maxRows; to++) {
      const part = sorted.slice(from, to);
      const tokens = part.reduce((a, b) => a + b, 0);
      if (tokens > maxTokens && to - from > 1) break;
      const f = batchFeatures(part.map((l) => item(l)));
      m = Math.min(m, cost.estimateMs(f) + best(to));
    }
    return m;
  };
  return best(0);
}

describe('partitionByLength (PetS DP)', () => {
  it('finds the minimum-cost contiguous partition (checked against brute force)', () => {
    const rng = new Rng(3);
    for (let trial = 0; trial < 20; trial++) {
      const n = rng.int(1, 11);
      const lengths = Array.from({ length: n }, () => rng.int(1, 129));
      const items = lengths.map((l) => item(l));
      const parts = partitionByLength(items, paddedCost, { maxRows: 4, maxTokens: 300 });
      const total = parts.reduce((s, p) => s + paddedCost.estimateMs(batchFeatures(p)), 0);
      expect(total).toBeCloseTo(bruteForce(lengths, paddedCost, 4, 300), 6);
      // Every item exactly once, limits respected, batches contiguous in length order.
      expect(parts.flat().map((i) => i.seq).sort((a, b) => a - b)).toEqual(items.map((i) => i.seq));
      for (const p of parts) {
        expect(p.length).toBeLessThanOrEqual(4);
        if (p.length > 1) expect(p.reduce((s, i) => s + i.length, 0)).toBeLessThanOrEqual(300);
      }
      const flat = parts.flat().map((i) => i.length);
      expect(flat).toEqual([...flat].sort((a, b) => a - b));
    }
  });

  it('groups short with short and long with long when padding would cost', () => {
    const items = [8, 120, 9, 118, 10, 121].map((l) => item(l));
    const parts = partitionByLength(items, paddedCost, { maxRows: 3, maxTokens: 10_000 });
    expect(parts.map((p) => p.map((i) => i.length))).toEqual([
      [8, 9, 10],
      [118, 120, 121],
    ]);
  });
});

describe('pickSlo', () => {
  const linear = new LinearCostModel({ fixedMs: 10, perRowMs: 0, perTokenMs: 0.1, perSqLenMs: 0, perKindTokenMs: {}, perTaskMs: 0 });
  const limits = { maxRows: 4, maxTokens: 10_000 };

  it('runs the earliest-due batch of the length grouping first', () => {
    const relaxed = Array.from({ length: 8 }, () => item(16, { dueMs: 10_000 }));
    const urgent = item(200, { dueMs: 60 });
    const pick = pickSlo([...relaxed, urgent], { nowMs: 0, cost: linear, limits, window: 64, marginMs: 5 });
    expect(pick.mode).toBe('throughput');
    expect(pick.batch).toEqual([urgent]);
  });

  it('puts all at-risk requests into the next batch whatever their lengths when the grouping would miss one', () => {
    const relaxed = Array.from({ length: 8 }, () => item(16, { dueMs: 10_000 }));
    // Length grouping would split these two (8 with the 16s, 200 alone) and finish the second at ~46 ms.
    const urgentShort = item(8, { dueMs: 40 });
    const urgentLong = item(200, { dueMs: 40 });
    const pick = pickSlo([...relaxed, urgentShort, urgentLong], { nowMs: 0, cost: linear, limits, window: 64, marginMs: 5 });
    expect(pick.mode).toBe('deadline');
    expect(pick.batch).toEqual(expect.arrayContaining([urgentShort, urgentLong]));
  });

  it('serves a queue at risk in batches larger than the time cap when capped singletons would miss (issue 11)', () => {
    // Fixed 10 ms per batch, 3.2 ms per request: the cap (15 ms) admits one request per batch.
    // Six queued, all due at 40 ms: singletons finish the sixth at 79 ms; two batches of three at 39 ms.
    const queued = Array.from({ length: 6 }, () => item(32, { dueMs: 40 }));
    const pick = pickSlo(queued, { nowMs: 0, cost: linear, limits: { maxRows: 8, maxTokens: 10_000, maxMs: 15 }, window: 64, marginMs: 2 });
    expect(pick.mode).toBe('deadline');
    expect(pick.batch.length).toBeGreaterThanOrEqual(3);
  });

  it('never sends a whole queue the model prices as late in one batch: one row at a time then', () => {
    const late = Array.from({ length: 6 }, () => item(32, { dueMs: 5 }));
    const pick = pickSlo(late, { nowMs: 0, cost: linear, limits: { maxRows: 8, maxTokens: 10_000 }, window: 64, marginMs: 2 });
    expect(pick.batch.length).toBe(1);
  });

  it('uses the throughput grouping when no deadline is at risk', () => {
    const items = Array.from({ length: 6 }, (_, i) => item(10 + i, { dueMs: 1e6 }));
    const pick = pickSlo(items, { nowMs: 0, cost: linear, limits, window: 64, marginMs: 5 });
    expect(pick.mode).toBe('throughput');
    expect(pick.batch.length).toBe(4);
  });

  it('runs offline items only when no online item waits, or to fill room', () => {
    const online = [item(10), item(11)];
    const offline = Array.from({ length: 5 }, () => item(10, { offline: true }));
    const pick = pickSlo([...offline, ...online], { nowMs: 0, cost: linear, limits, window: 64, marginMs: 5 });
    expect(pick.batch.slice(0, 2)).toEqual(expect.arrayContaining(online));
    expect(pick.batch.length).toBe(4);
    const onlyOnlineFirst = pickSlo([...offline, ...online], { nowMs: 0, cost: linear, limits: { maxRows: 2, maxTokens: 10_000 }, window: 64, marginMs: 5 });
    expect(onlyOnlineFirst.batch.every((i) => !i.offline)).toBe(true);
  });
});

describe('fitNonNegative', () => {
  it('recovers the coefficients of a linear cost and never returns a negative one', () => {
    const rng = new Rng(5);
    const X: number[][] = [];
    const y: number[] = [];
    for (let i = 0; i < 30; i++) {
      const rows = rng.int(1, 64);
      const tokens = rows * rng.int(1, 128);
      X.push([1, rows, tokens, 0]);
      y.push(3 + 0.5 * rows + 0.02 * tokens + (rng.next() - 0.5) * 0.01);
    }
    const c = fitNonNegative(X, y);
    expect(c[0]).toBeCloseTo(3, 1);
    expect(c[1]).toBeCloseTo(0.5, 2);
    expect(c[2]).toBeCloseTo(0.02, 3);
    expect(c[3]).toBe(0);
    // A target that decreases with a feature: that coefficient is clamped to 0, not negative.
    const c2 = fitNonNegative(
      [
        [1, 1],
        [1, 2],
        [1, 3],
      ],
      [3, 2, 1],
    );
    expect(c2.every((v) => v >= 0)).toBe(true);
  });
});

describe('LinearCostModel', () => {
  it('prices a PET by its size relative to the profiled one of its kind', () => {
    const m = new LinearCostModel({
      fixedMs: 1,
      perRowMs: 0,
      perTokenMs: 0.01,
      perSqLenMs: 0,
      perKindTokenMs: { lora: 0.002 },
      perTaskMs: 0,
      profiledPackedFloats: { lora: 1000 },
    });
    expect(m.sizeScale('lora', 4000)).toBe(4);
    expect(m.sizeScale('mask', 4000)).toBe(1);
    const rank4 = batchFeatures([item(10, { petScale: m.sizeScale('lora', 1000) })]);
    const rank16 = batchFeatures([item(10, { petScale: m.sizeScale('lora', 4000) })]);
    expect(m.estimateMs(rank16) - m.estimateMs(rank4)).toBeCloseTo(0.002 * 10 * 3, 9);
  });
});

describe('partitionByLength ties', () => {
  it('prefers fewer, fuller batches when the cost model has no fixed per-batch term', () => {
    const additive = new LinearCostModel({ fixedMs: 0, perRowMs: 0.1, perTokenMs: 0.01, perSqLenMs: 0, perKindTokenMs: {}, perTaskMs: 0 });
    const parts = partitionByLength(
      Array.from({ length: 40 }, (_, i) => item(10 + (i % 7))),
      additive,
      { maxRows: 16, maxTokens: 10_000 },
    );
    expect(parts.length).toBe(3);
  });
});
