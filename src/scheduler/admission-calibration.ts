/**
 * How far admission's finish-time predictions run over, learned from how they came out.
 *
 * Early refusal admits a request when `predicted + margin ≤ SLO`. The prediction spans the
 * running batch, every queued batch due before the request and the rows later arrivals add
 * to its own batch, so its error is not the cost model's per-batch error, and it changes with
 * the load and the device: a fixed margin (a quarter of the prediction) let ~10 % of the
 * requests admitted under overload come back late (bench/results/sched-latency-*-0753). This
 * keeps the overshoot of recent predictions (measured latency − predicted) and uses a high
 * quantile of it as the margin: what the predictions actually needed, lately.
 *
 * Scaled by √predicted: a prediction spanning N batches is off by the sum of N batch errors,
 * which grows as √N when they are independent. In the 2026-12-03 traces the 95th percentile of
 * the overshoot was 160–340 ms for predictions of 150–1200 ms (flatter than proportional: a
 * stall delays everyone behind it by the same milliseconds; steeper than constant: noise adds
 * up). A ratio learned from mid-length predictions over-refused near the deadline at moderate
 * load; a constant learned from short ones under-protected long ones where errors compound.
 *
 * One outcome per batch, its worst row: rows of a batch share its timing error, so one slow
 * batch would otherwise count as 10–20 outcomes (with one outcome per row, a single batch that
 * ran 1.9x its estimate 3 s into a run at 70 % load set the largest margin and 39 requests were
 * refused that the baselines served in time). The 90th percentile of batch-worst rows is
 * about the 97th–99th of rows at 3–13 rows per batch. Only rows predicted to take a fair part
 * of their SLO (a fifth) count: the margin is for requests near their deadline, and at low
 * load short predictions would fill the window.
 *
 * How cautious depends on whether demand exceeds the device. Under overload every admitted
 * request is near its deadline and another request waits to take the place of each refused one,
 * so a late answer only wastes device time: the margin is the 90th percentile of batch-worst
 * rows (about the 97th–99th of rows at 3–13 rows per batch). Otherwise a refusal is a request
 * lost that would most likely have made it (the median overshoot is negative), so the margin is
 * the median of batch-worst rows (still an upper quantile of rows). Overload = more than 5 % of
 * the last 200 admission decisions were refusals: at 130 % load about a third are, at 70 % none
 * or a handful. With the 90th percentile at every load, a 60 s repeat at 70 % whose device ran
 * 1.1x slow for a while refused 105 (bench/results/sched-latency-*-0843).
 *
 * Quick runs that chose these (`npm run bench -- latency --loads 0.7,1.3 --seconds 30
 * --repeats 1 --systems ours`, one each, so noisy): per row and ratio 25 refused at 70 % / 4
 * late at 130 %; per row and constant 0 / 13; per row and √ 26 / 5 (a start-up event); per
 * batch, √, 95th percentile after 16 batches 9 / 41 (all 41 in the first 9 s, before and while
 * it learned); per batch, √, 90th percentile after 8 batches 2 / 20 (all in the first 5 s);
 * the same with the median when not overloaded 0 / 17.
 */
export interface AdmissionCalibrationOptions {
  /** Outcomes kept (the most recent). */
  window: number;
  /** Below this many recent outcomes (batches) the margin is the fallback. */
  minSamples: number;
  /**
   * Quantile of the scaled overshoot used for the margin: `quantile` under overload (more than
   * `overloadRefusedFraction` of the last `decisionWindow` admission decisions were refusals),
   * `calmQuantile` otherwise.
   */
  quantile: number;
  calmQuantile: number;
  overloadRefusedFraction: number;
  decisionWindow: number;
  /** Predictions shorter than this fraction of their SLO are not recorded. */
  minPredictedFraction: number;
  /**
   * Bounds on the margin, as fractions of the request's SLO: never admit far past the deadline
   * on the strength of pessimistic predictions, never refuse everything. The largest margin
   * leaves room above minPredictedFraction, so requests admitted under it still leave
   * outcomes and the margin can come down again.
   */
  minMarginFraction: number;
  maxMarginFraction: number;
  /** Outcomes older than this are forgotten (a stall once must not shape admission for good). */
  maxAgeMs: number;
}

export const ADMISSION_CALIBRATION_DEFAULTS: AdmissionCalibrationOptions = {
  window: 256,
  minSamples: 8,
  quantile: 0.9,
  calmQuantile: 0.5,
  overloadRefusedFraction: 0.05,
  decisionWindow: 200,
  minPredictedFraction: 0.2,
  minMarginFraction: -0.1,
  maxMarginFraction: 0.6,
  maxAgeMs: 60_000,
};

/** One admitted row of a finished batch (or one dropped as expired, with a lower bound on its latency). */
export interface AdmissionOutcome {
  predictedMs: number;
  measuredMs: number;
  sloMs: number;
}

export class AdmissionCalibration {
  /** Recent scaled overshoots ((measured − predicted) / √predicted), one per batch, oldest first. */
  private readonly outcomes: { overshoot: number; atMs: number }[] = [];
  /** The last admission decisions (true = refused), to tell overload from a burst. */
  private readonly decisions: boolean[] = [];
  private refusedInWindow = 0;
  /** The outcomes' overshoots, sorted; rebuilt only after the window changed (every admission reads it). */
  private sorted: number[] | null = null;

  constructor(private readonly opts: AdmissionCalibrationOptions = ADMISSION_CALIBRATION_DEFAULTS) {}

  /** One admission decision (only those where a margin was applied). */
  noteDecision(refused: boolean): void {
    this.decisions.push(refused);
    if (refused) this.refusedInWindow++;
    if (this.decisions.length > this.opts.decisionWindow && this.decisions.shift()) this.refusedInWindow--;
  }

  /** Whether recent decisions say demand exceeds what the device serves in time. */
  overloaded(): boolean {
    return this.decisions.length > 0 && this.refusedInWindow > this.opts.overloadRefusedFraction * this.decisions.length;
  }

  /** The admitted rows of one finished batch (or the requests one expiry pass dropped): one outcome, the worst. */
  record(rows: readonly AdmissionOutcome[], nowMs: number): void {
    let worst = -Infinity;
    for (const r of rows) {
      if (!(r.predictedMs > 0) || r.predictedMs < this.opts.minPredictedFraction * r.sloMs || !Number.isFinite(r.measuredMs)) continue;
      worst = Math.max(worst, (r.measuredMs - r.predictedMs) / Math.sqrt(r.predictedMs));
    }
    if (worst === -Infinity) return;
    this.outcomes.push({ overshoot: worst, atMs: nowMs });
    if (this.outcomes.length > this.opts.window) this.outcomes.shift();
    this.sorted = null;
  }

  /**
   * The margin (ms) to add to `predictedMs` for a request with this SLO, or null while too few
   * recent outcomes were seen (the caller's fallback applies).
   */
  marginMs(predictedMs: number, sloMs: number, nowMs: number): number | null {
    const q = this.scaledQuantile(nowMs);
    return q === null ? null : this.boundedMargin(q, predictedMs, sloMs);
  }

  /** The longest prediction admitted for this SLO (p + margin(p) = SLO), or null while the fallback applies. */
  admitsUpToMs(sloMs: number, nowMs: number): number | null {
    const q = this.scaledQuantile(nowMs);
    if (q === null) return null;
    // p + margin(p) rises through the SLO once (slope 1 + q/(2√p), or 1 where a bound holds): bisect.
    let lo = 0;
    let hi = 2 * sloMs;
    for (let i = 0; i < 40; i++) {
      const mid = (lo + hi) / 2;
      if (mid + this.boundedMargin(q, mid, sloMs) > sloMs) hi = mid;
      else lo = mid;
    }
    return lo;
  }

  /** q·√p within the bounds, for scaled quantile q. */
  private boundedMargin(q: number, predictedMs: number, sloMs: number): number {
    return Math.min(this.opts.maxMarginFraction * sloMs, Math.max(this.opts.minMarginFraction * sloMs, q * Math.sqrt(Math.max(predictedMs, 0))));
  }

  /** Outcomes the margin is learned from; 0 while there are too few and the fallback is in use. */
  learnedFrom(nowMs: number): number {
    this.forget(nowMs);
    return this.outcomes.length >= this.opts.minSamples ? this.outcomes.length : 0;
  }

  private scaledQuantile(nowMs: number): number | null {
    if (this.learnedFrom(nowMs) === 0) return null;
    const sorted = (this.sorted ??= this.outcomes.map((o) => o.overshoot).sort((a, b) => a - b));
    const quantile = this.overloaded() ? this.opts.quantile : this.opts.calmQuantile;
    return sorted[Math.min(sorted.length - 1, Math.floor(quantile * sorted.length))]!;
  }

  private forget(nowMs: number): void {
    while (this.outcomes.length > 0 && nowMs - this.outcomes[0]!.atMs > this.opts.maxAgeMs) {
      this.outcomes.shift();
      this.sorted = null;
    }
  }
}
