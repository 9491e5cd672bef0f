import { describe, expect, it } from 'vitest';
import { ADMISSION_CALIBRATION_DEFAULTS as D, AdmissionCalibration, type AdmissionOutcome } from '../../src/scheduler/admission-calibration.js';
import { Rng } from '../../src/util/random.js';

const SLO = 1500;
const row = (predictedMs: number, measuredMs: number, sloMs = SLO): AdmissionOutcome => ({ predictedMs, measuredMs, sloMs });
/** A batch whose one row was predicted at `predictedMs` and overshot by `scaled` · √predictedMs. */
const batchWithScaledOvershoot = (scaled: number, predictedMs = 900): AdmissionOutcome[] => [row(predictedMs, predictedMs + scaled * Math.sqrt(predictedMs))];

describe('AdmissionCalibration', () => {
  it('gives no margin (the caller falls back) until it has seen enough batches near the deadline', () => {
    const c = new AdmissionCalibration();
    for (let i = 0; i < D.minSamples - 1; i++) c.record(batchWithScaledOvershoot(5), i);
    expect(c.marginMs(900, SLO, 100)).toBeNull();
    expect(c.admitsUpToMs(SLO, 100)).toBeNull();
    expect(c.learnedFrom(100)).toBe(0);
    c.record(batchWithScaledOvershoot(5), 100);
    expect(c.learnedFrom(100)).toBe(D.minSamples);
    // Learned: 5 · √p, so a 900 ms prediction gets 150 ms and one of 400 ms gets 100 ms.
    expect(c.marginMs(900, SLO, 100)).toBeCloseTo(150, 9);
    expect(c.marginMs(400, SLO, 100)).toBeCloseTo(100, 9);
    // p + 5√p = 1500 at √p = (−5 + √(25 + 6000)) / 2.
    const root = (-5 + Math.sqrt(25 + 4 * SLO)) / 2;
    expect(c.admitsUpToMs(SLO, 100)).toBeCloseTo(root * root, 6);
  });

  it('counts a batch once, by its worst row, and ignores rows predicted short against their SLO', () => {
    const c = new AdmissionCalibration();
    for (let i = 0; i < D.minSamples; i++) {
      // Twenty rows of one batch: one overshoots by 300 ms, the rest by 0; and a short prediction (jitter) that overshot by 1 s.
      c.record([...Array.from({ length: 19 }, () => row(900, 900)), row(900, 1200), row(0.19 * SLO, 0.19 * SLO + 1000)], i);
    }
    expect(c.learnedFrom(D.minSamples)).toBe(D.minSamples);
    expect(c.marginMs(900, SLO, D.minSamples)).toBeCloseTo(300, 9);
    const short = new AdmissionCalibration();
    for (let i = 0; i < 100; i++) short.record([row(0.19 * SLO, 1200)], i);
    expect(short.learnedFrom(100)).toBe(0);
  });

  it('uses the median overshoot while few requests are refused, the high quantile once refusals say overload', () => {
    const rng = new Rng(41);
    const c = new AdmissionCalibration();
    const scaled: number[] = [];
    for (let i = 0; i < 100; i++) {
      const z = -6 + 12 * rng.next();
      scaled.push(z);
      c.record(batchWithScaledOvershoot(z), 0);
    }
    scaled.sort((a, b) => a - b);
    const at = (q: number): number => scaled[Math.floor(q * 100)]! * Math.sqrt(1000);
    expect(c.overloaded()).toBe(false);
    expect(c.marginMs(1000, SLO, 0)).toBeCloseTo(at(D.calmQuantile), 6);
    // 5 % of the decision window refused is still a burst; one more refusal is overload.
    for (let i = 0; i < D.decisionWindow; i++) c.noteDecision(i >= (1 - D.overloadRefusedFraction) * D.decisionWindow);
    expect(c.overloaded()).toBe(false);
    c.noteDecision(true);
    expect(c.overloaded()).toBe(true);
    expect(c.marginMs(1000, SLO, 0)).toBeCloseTo(at(D.quantile), 6);
    // The window slides: a run of admissions ends the overload.
    for (let i = 0; i < D.decisionWindow; i++) c.noteDecision(false);
    expect(c.overloaded()).toBe(false);
  });

  it('is the chosen quantile of the scaled overshoots over the most recent window, within its bounds', () => {
    const rng = new Rng(31);
    const c = new AdmissionCalibration({ ...D, window: 200 });
    for (let i = 0; i < 20; i++) c.noteDecision(true);
    // An old regime (predictions far too short) that the window must forget ...
    for (let i = 0; i < 500; i++) c.record(batchWithScaledOvershoot(40), 0);
    // ... then scaled overshoots uniform on [-6, 6]: the margin follows their quantile.
    const scaled: number[] = [];
    for (let i = 0; i < 200; i++) {
      const z = -6 + 12 * rng.next();
      scaled.push(z);
      c.record(batchWithScaledOvershoot(z, 400 + 800 * rng.next()), 0);
    }
    scaled.sort((a, b) => a - b);
    expect(c.marginMs(1000, SLO, 0)).toBeCloseTo(scaled[Math.floor(D.quantile * 200)]! * Math.sqrt(1000), 6);
    // Bounds, as fractions of the request's SLO: pessimistic predictions never admit far past the
    // deadline, hopeless ones never refuse everything.
    const low = new AdmissionCalibration();
    for (let i = 0; i < 64; i++) low.record([row(1000, 100)], 0);
    expect(low.marginMs(1000, SLO, 0)).toBeCloseTo(D.minMarginFraction * SLO, 9);
    const high = new AdmissionCalibration();
    for (let i = 0; i < 64; i++) high.record([row(1000, 9000)], 0);
    expect(high.marginMs(1000, SLO, 0)).toBeCloseTo(D.maxMarginFraction * SLO, 9);
    expect(high.marginMs(1000, 500, 0)).toBeCloseTo(D.maxMarginFraction * 500, 9);
    expect(high.admitsUpToMs(SLO, 0)).toBeCloseTo((1 - D.maxMarginFraction) * SLO, 6);
  });

  it('forgets outcomes older than maxAgeMs: one stall does not shape admission for good', () => {
    const c = new AdmissionCalibration();
    for (let i = 0; i < 64; i++) c.record(batchWithScaledOvershoot(10, 900), 1000);
    expect(c.marginMs(900, SLO, 1000 + D.maxAgeMs)).toBeCloseTo(300, 9);
    expect(c.marginMs(900, SLO, 1001 + D.maxAgeMs)).toBeNull();
    expect(c.learnedFrom(1001 + D.maxAgeMs)).toBe(0);
  });

  it('keeps requests admissible at its largest margin, so it can learn its way down again', () => {
    // At the largest margin a request is admitted with predicted ≤ (1 − maxMarginFraction) × SLO;
    // such predictions must still be long enough to be recorded.
    expect(1 - D.maxMarginFraction).toBeGreaterThan(D.minPredictedFraction);
  });
});
