/**
 * Recent traffic in memory, for the status page: throughput, latency
 * percentiles, batch sizes and SLO attainment over the last minutes.
 *
 * Prometheus answers the same questions from histograms, but only with a
 * Prometheus server running; the status page must work on a bare `petserve
 * serve`, so the process keeps its own short history. Time is cut into
 * one-second buckets kept in a ring; latencies are kept as a bounded sample per
 * bucket (reservoir sampling), so memory is O(horizon × sample cap) however
 * heavy the traffic, and p99 over a minute is still estimated from thousands of
 * samples.
 */

export interface RollingWindowOptions {
  /** Seconds of history kept (the longest window or series that can be asked for). */
  horizonSeconds?: number;
  /** Latency samples kept per one-second bucket. */
  samplesPerSecond?: number;
  /** Clock in ms (tests drive it). */
  now?: () => number;
  /** Uniform [0, 1) source for reservoir sampling (tests make it deterministic). */
  random?: () => number;
}

interface Bucket {
  /** Unix second this bucket holds; -1 = empty slot. */
  second: number;
  requests: number;
  failed: number;
  sloEvaluated: number;
  sloMissed: number;
  /** Latency samples (ms) of successful requests; `latencySeen` of them were offered. */
  latencies: number[];
  latencySeen: number;
  batches: number;
  batchRows: number;
  batchTokens: number;
}

/** One request as the window counts it. */
export interface WindowRequest {
  ok: boolean;
  latencyMs: number;
  /** Whether the request had a deadline that was judged (finished or expired), and whether it was missed. */
  slo: 'met' | 'missed' | 'none';
}

export interface WindowSummary {
  /** Seconds the summary covers (shorter than asked while the process is young). */
  seconds: number;
  requests: number;
  failed: number;
  requestsPerSecond: number;
  tokensPerSecond: number;
  /** Latency percentiles of successful requests, ms; null without any. */
  p50Ms: number | null;
  p90Ms: number | null;
  p99Ms: number | null;
  batches: number;
  meanBatchRows: number | null;
  meanBatchTokens: number | null;
  /** Fraction of judged requests that met their deadline; null when none was judged. */
  sloAttainment: number | null;
}

export interface WindowPoint {
  /** End of the interval, unix seconds. */
  t: number;
  requestsPerSecond: number;
  p50Ms: number | null;
  p99Ms: number | null;
  meanBatchRows: number | null;
}

function emptyBucket(): Bucket {
  return {
    second: -1,
    requests: 0,
    failed: 0,
    sloEvaluated: 0,
    sloMissed: 0,
    latencies: [],
    latencySeen: 0,
    batches: 0,
    batchRows: 0,
    batchTokens: 0,
  };
}

/** Nearest-rank percentile of an ascending array (q in [0, 1]). */
export function percentile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export class RollingWindow {
  private readonly ring: Bucket[];
  private readonly horizon: number;
  private readonly sampleCap: number;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly startedSecond: number;

  constructor(opts: RollingWindowOptions = {}) {
    this.horizon = opts.horizonSeconds ?? 300;
    this.sampleCap = opts.samplesPerSecond ?? 256;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.ring = Array.from({ length: this.horizon }, emptyBucket);
    this.startedSecond = Math.floor(this.now() / 1000);
  }

  /** The bucket of the current second, recycling the slot of a second that fell out of the horizon. */
  private current(): Bucket {
    const second = Math.floor(this.now() / 1000);
    const slot = second % this.horizon;
    let b = this.ring[slot]!;
    if (b.second !== second) {
      b = emptyBucket();
      b.second = second;
      this.ring[slot] = b;
    }
    return b;
  }

  recordRequest(r: WindowRequest): void {
    const b = this.current();
    b.requests += 1;
    if (!r.ok) b.failed += 1;
    if (r.slo !== 'none') {
      b.sloEvaluated += 1;
      if (r.slo === 'missed') b.sloMissed += 1;
    }
    if (!r.ok) return;
    // Reservoir sampling (Vitter's algorithm R): each latency of this second
    // ends up in the sample with equal probability, so percentiles stay unbiased.
    b.latencySeen += 1;
    if (b.latencies.length < this.sampleCap) {
      b.latencies.push(r.latencyMs);
    } else {
      const j = Math.floor(this.random() * b.latencySeen);
      if (j < this.sampleCap) b.latencies[j] = r.latencyMs;
    }
  }

  recordBatch(rows: number, tokens: number): void {
    const b = this.current();
    b.batches += 1;
    b.batchRows += rows;
    b.batchTokens += tokens;
  }

  /** Buckets of the last `seconds` seconds, the current (partial) second included. */
  private bucketsSince(fromSecond: number, toSecond: number): Bucket[] {
    const out: Bucket[] = [];
    for (const b of this.ring) if (b.second >= fromSecond && b.second <= toSecond) out.push(b);
    return out;
  }

  private summarise(buckets: readonly Bucket[], seconds: number): WindowSummary {
    let requests = 0;
    let failed = 0;
    let evaluated = 0;
    let missed = 0;
    let batches = 0;
    let rows = 0;
    let tokens = 0;
    const latencies: number[] = [];
    for (const b of buckets) {
      requests += b.requests;
      failed += b.failed;
      evaluated += b.sloEvaluated;
      missed += b.sloMissed;
      batches += b.batches;
      rows += b.batchRows;
      tokens += b.batchTokens;
      for (const l of b.latencies) latencies.push(l);
    }
    latencies.sort((a, b) => a - b);
    return {
      seconds,
      requests,
      failed,
      requestsPerSecond: seconds > 0 ? requests / seconds : 0,
      tokensPerSecond: seconds > 0 ? tokens / seconds : 0,
      p50Ms: percentile(latencies, 0.5),
      p90Ms: percentile(latencies, 0.9),
      p99Ms: percentile(latencies, 0.99),
      batches,
      meanBatchRows: batches > 0 ? rows / batches : null,
      meanBatchTokens: batches > 0 ? tokens / batches : null,
      sloAttainment: evaluated > 0 ? (evaluated - missed) / evaluated : null,
    };
  }

  /**
   * Totals and percentiles over the last `seconds` seconds. Rates divide by the
   * time actually covered: the elapsed part of the current second plus the full
   * seconds before it, never more than the process has been alive.
   */
  summary(seconds = 60): WindowSummary {
    const span = Math.min(seconds, this.horizon);
    const nowMs = this.now();
    const nowSecond = Math.floor(nowMs / 1000);
    const from = Math.max(nowSecond - span + 1, this.startedSecond);
    const covered = Math.max(0.001, (nowMs - from * 1000) / 1000);
    return this.summarise(this.bucketsSince(from, nowSecond), Math.min(covered, span));
  }

  /**
   * The last `spanSeconds` as points of `stepSeconds` each (oldest first), for
   * charts. The current, incomplete second is left out so the newest point does
   * not dip while its second is still filling.
   */
  series(spanSeconds = 300, stepSeconds = 5): WindowPoint[] {
    const lastFull = Math.floor(this.now() / 1000) - 1;
    const span = Math.min(spanSeconds, this.horizon - 1);
    const first = Math.max(lastFull - span + 1, this.startedSecond);
    const points: WindowPoint[] = [];
    if (lastFull < first) return points;
    // Point boundaries sit on multiples of the step, so a point covers the same
    // seconds from one poll to the next and the chart does not shimmer.
    for (let s = first - (first % stepSeconds); s <= lastFull; s += stepSeconds) {
      const start = Math.max(s, first);
      const stop = Math.min(s + stepSeconds - 1, lastFull);
      const sum = this.summarise(this.bucketsSince(start, stop), stop - start + 1);
      points.push({ t: stop + 1, requestsPerSecond: sum.requestsPerSecond, p50Ms: sum.p50Ms, p99Ms: sum.p99Ms, meanBatchRows: sum.meanBatchRows });
    }
    return points;
  }
}
