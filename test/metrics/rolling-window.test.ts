import { describe, expect, it } from 'vitest';
import { percentile, RollingWindow } from '../../src/metrics/rolling-window.js';
import { PetOverheadWindow } from '../../src/metrics/pet-overhead.js';
import { TaskRequestCounts } from '../../src/metrics/task-counts.js';

/** A window on a clock the test moves; starts at a whole second. */
function clocked(opts: { horizonSeconds?: number; samplesPerSecond?: number } = {}): { w: RollingWindow; advance: (ms: number) => void } {
  let now = 1_700_000_000_000;
  const w = new RollingWindow({ ...opts, now: () => now });
  return { w, advance: (ms) => (now += ms) };
}

const ok = (latencyMs: number) => ({ ok: true, latencyMs, slo: 'met' as const });

describe('percentile', () => {
  it('is nearest-rank on a sorted sample', () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(xs, 0.5)).toBe(50);
    expect(percentile(xs, 0.99)).toBe(99);
    expect(percentile(xs, 1)).toBe(100);
    expect(percentile([7], 0.99)).toBe(7);
    expect(percentile([], 0.5)).toBeNull();
  });
});

describe('RollingWindow', () => {
  it('gives throughput over the time covered and percentiles of successful requests', () => {
    const { w, advance } = clocked();
    // 10 s at 20 requests/s: latencies 1..200 ms, plus failures that carry no latency.
    for (let s = 0; s < 10; s++) {
      for (let i = 0; i < 20; i++) w.recordRequest(ok(s * 20 + i + 1));
      w.recordRequest({ ok: false, latencyMs: 99_999, slo: 'none' });
      w.recordBatch(20, 640);
      advance(1000);
    }
    const sum = w.summary(60);
    // The process is 10 s old: rates divide by 10 s, not by the 60 s asked for.
    expect(sum.seconds).toBeCloseTo(10, 6);
    expect(sum.requests).toBe(210);
    expect(sum.failed).toBe(10);
    expect(sum.requestsPerSecond).toBeCloseTo(21, 6);
    expect(sum.tokensPerSecond).toBeCloseTo(640, 6);
    expect(sum.p50Ms).toBe(100);
    expect(sum.p99Ms).toBe(198);
    expect(sum.meanBatchRows).toBe(20);
    expect(sum.sloAttainment).toBe(1);

    // A shorter window only sees its seconds: step back into the 10th second,
    // then the last 2 s are seconds 9 and 10 (latencies 161..200).
    advance(-1);
    const last2 = w.summary(2);
    expect(last2.requests).toBe(42);
    expect(last2.p50Ms).toBe(180);
  });

  it('forgets what is older than the horizon', () => {
    const { w, advance } = clocked({ horizonSeconds: 30 });
    for (let i = 0; i < 50; i++) w.recordRequest(ok(1000));
    advance(31_000);
    w.recordRequest(ok(5));
    const sum = w.summary(60);
    expect(sum.requests).toBe(1);
    expect(sum.p99Ms).toBe(5);
    expect(sum.seconds).toBeLessThanOrEqual(30);
  });

  it('keeps a bounded latency sample per second without biasing percentiles', () => {
    let now = 1_700_000_000_000;
    let seed = 1;
    const random = (): number => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
    const w = new RollingWindow({ samplesPerSecond: 64, now: () => now, random });
    // 10 000 latencies in one second, uniform on 1..10 000 ms.
    const order = Array.from({ length: 10_000 }, (_, i) => i + 1).sort(() => random() - 0.5);
    for (const l of order) w.recordRequest(ok(l));
    now += 500;
    const sum = w.summary(60);
    expect(sum.requests).toBe(10_000);
    // 64 samples of a uniform distribution: the median lies well inside the middle half.
    expect(sum.p50Ms!).toBeGreaterThan(2500);
    expect(sum.p50Ms!).toBeLessThan(7500);
  });

  it('judges SLO attainment only over requests with a judged deadline', () => {
    const { w } = clocked();
    w.recordRequest({ ok: true, latencyMs: 10, slo: 'met' });
    w.recordRequest({ ok: true, latencyMs: 10, slo: 'met' });
    w.recordRequest({ ok: true, latencyMs: 10, slo: 'missed' });
    w.recordRequest({ ok: false, latencyMs: 0, slo: 'missed' });
    w.recordRequest({ ok: false, latencyMs: 0, slo: 'none' });
    expect(w.summary().sloAttainment).toBeCloseTo(0.5, 9);
    expect(clocked().w.summary().sloAttainment).toBeNull();
  });

  it('returns chart points on step boundaries, oldest first, without the unfinished second', () => {
    const { w, advance } = clocked();
    // 12 full seconds: seconds 0-4 at 1 req/s, 5-9 at 3 req/s, 10-11 at 2 req/s; then into second 12.
    for (let s = 0; s < 12; s++) {
      const n = s < 5 ? 1 : s < 10 ? 3 : 2;
      for (let i = 0; i < n; i++) w.recordRequest(ok(10 * n));
      w.recordBatch(n, 10);
      advance(1000);
    }
    for (let i = 0; i < 50; i++) w.recordRequest(ok(1)); // the current second: not charted yet
    advance(400);
    const pts = w.series(300, 5);
    expect(pts.map((p) => p.requestsPerSecond)).toEqual([1, 3, 2]);
    expect(pts.map((p) => p.p50Ms)).toEqual([10, 30, 20]);
    expect(pts.map((p) => p.meanBatchRows)).toEqual([1, 3, 2]);
    const t0 = Math.floor(1_700_000_000_000 / 1000);
    expect(pts.map((p) => p.t)).toEqual([t0 + 5, t0 + 10, t0 + 12]);
  });
});

describe('PetOverheadWindow', () => {
  it('is null without shared time and sums every op class', () => {
    const o = new PetOverheadWindow(4);
    expect(o.overhead()).toBeNull();
    o.record({ shared: 0, pet: { lora: 1 } });
    expect(o.overhead()).toBeNull();
    o.record({ shared: 10, pet: { lora: 1, sparse: 3 } });
    // Sums over the window: (1 + 1 + 3) / (0 + 10).
    expect(o.overhead()).toEqual({ ratio: 0.5, byKind: { lora: 0.2, sparse: 0.3 }, batches: 2 });
  });
});

describe('TaskRequestCounts', () => {
  it('stays within maxEntries and keeps the busiest tasks exact', () => {
    const c = new TaskRequestCounts(10);
    for (let i = 0; i < 5; i++) c.add('hot', 100 + i);
    for (let i = 0; i < 100; i++) c.add(`cold${i}`);
    expect(c.size).toBeLessThanOrEqual(10);
    expect(c.get('hot')).toBe(510);
    expect(c.top(1)).toEqual([['hot', 510]]);
  });
});
